"""Process attribution: which local process sent or received each transaction and flow.

The kernel (bpf/sockets.bpf.c) reports every socket's owner as it happens;
this package turns those facts into Packetbeat's process fields, reading
/proc while the process is still there, and keeps bounded tables to look a
connection's endpoints up when its events are built.  It sits below the
event builder and above capture (it decodes nothing itself).
"""
