"""A small Oracle listener and database stand-in, enough for python-oracledb (thin mode) to connect and run SQL.

    python -m tests.protocols.tns.listener HOST PORT [REDIRECT_PORT]     (from the repository root)

By the connect descriptor's SERVICE_NAME it:

- ORCL: accepts (TNS v319, 4-byte lengths after), negotiates TTC (protocol,
  data types), authenticates with O5LOGON (the 11g verifier), then answers
  calls: a statement naming `missing_table` fails with ORA-00942, any other
  (and any re-execution) succeeds with one row processed; COMMIT and LOGOFF
  get a status;
- RESENDME: first asks the client to resend its CONNECT, then accepts;
- MOVED: redirects to REDIRECT_PORT on the same host, which accepts it;
- anything else: refuses with TNS-12514 (service not known).

This is not Oracle: it implements what python-oracledb needs, from the
documented wire formats.  It serves connections one thread each and exits
on SIGTERM.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import struct
import sys
import threading

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests.protocols.tns import wire as w

USER, PASSWORD = b"scott", b"tiger"
VERIFIER_11G = 0xB152
SDU = 8192
FIELD_VERSION = 12  # TTC field version 19.1, as an Oracle 19c server reports
REFUSE_TEXT = b"(DESCRIPTION=(TMP=)(VSNNUM=318767104)(ERR=12514)(ERROR_STACK=(ERROR=(CODE=12514)(EMFI=4))))"


def aes_cbc(key: bytes, data: bytes, decrypt: bool = False) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CBC(bytes(16)))
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(data) + op.finalize()


def padded(data: bytes) -> bytes:
    n = 16 - len(data) % 16
    return data + bytes([n]) * n


def recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return out


def read_packet(sock: socket.socket, large: bool) -> tuple[int, int, bytes]:
    head = recv_exact(sock, 8)
    size = struct.unpack(">I", head[:4])[0] if large else struct.unpack(">H", head[:2])[0]
    return head[4], head[5], recv_exact(sock, size - 8)


class Session:
    def __init__(self, sock: socket.socket, host: str, redirect_port: int, is_target: bool) -> None:
        self.sock = sock
        self.is_target = is_target  # the redirect target: it accepts MOVED
        self.host = host
        self.redirect_port = redirect_port
        self.resent = False
        self.vfr = os.urandom(10)
        self.part_a = os.urandom(48)
        self.combo = b""

    def run(self) -> None:
        try:
            if self.connect_phase():
                self.ttc_loop()
        except (EOFError, OSError):
            pass
        finally:
            self.sock.close()

    # -- listener ---------------------------------------------------------------------------------

    def connect_phase(self) -> bool:
        while True:
            ptype, _, body = read_packet(self.sock, large=False)
            if ptype != w.CONNECT:
                return False
            length, offset = struct.unpack(">HH", body[16:20])
            descriptor = body[offset - 8:offset - 8 + length]
            if len(descriptor) < length:  # the descriptor follows in a DATA packet
                _, _, more = read_packet(self.sock, large=False)
                descriptor = more[2:]
            match = re.search(rb"SERVICE_NAME=([^)]*)", descriptor)
            service = match.group(1).upper() if match else b""
            if service == b"RESENDME" and not self.resent:
                self.resent = True
                self.sock.sendall(w.resend())
                continue
            if service in (b"ORCL", b"RESENDME") or (service == b"MOVED" and self.is_target):
                self.sock.sendall(w.accept())
                return True
            if service == b"MOVED":
                target = f"(ADDRESS=(PROTOCOL=tcp)(HOST={self.host})(PORT={self.redirect_port}))".encode()
                self.sock.sendall(w.redirect(target + b"\0" + descriptor))
                return False
            self.sock.sendall(w.refuse(REFUSE_TEXT))
            return False

    # -- database ---------------------------------------------------------------------------------

    def send(self, payload: bytes) -> None:
        self.sock.sendall(w.data(payload))

    def ttc_loop(self) -> None:
        while True:
            ptype, _, body = read_packet(self.sock, large=True)
            if ptype == w.MARKER:
                self.sock.sendall(w.marker(2))
                continue
            if ptype != w.DATA:
                return
            flags, payload = struct.unpack(">H", body[:2])[0], body[2:]
            if flags & 0x40 or not payload:  # end of file: the client is gone
                return
            while len(body) + 8 == SDU:  # a packet that fills the SDU is continued by the next one
                _, _, body = read_packet(self.sock, large=True)
                payload += body[2:]
            self.call(payload)

    def call(self, payload: bytes) -> None:
        kind = payload[0]
        if kind == 1:  # protocol negotiation
            self.send(self.protocol_reply())
        elif kind == 2:  # data types
            self.send(b"\x02\x00\x00")
        else:
            function = function_code(payload)
            if function == 118:
                self.send(self.auth_one())
            elif function == 115:
                self.send(self.auth_two(payload))
            elif function == 94:
                self.send(self.execute(payload))
            elif function in (4, 78):  # a cursor executed again
                self.send(error(0, "", rowcount=1))
            else:  # commit, rollback, logoff, ping ...
                self.send(status())

    def protocol_reply(self) -> bytes:
        fdo = bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0x07, 0xD0])  # the national character set: AL16UTF16
        compile_caps = bytearray(60)
        compile_caps[7] = FIELD_VERSION
        runtime_caps = bytearray(11)
        runtime_caps[6] = 0x04  # 32K strings
        return (b"\x01\x06\x00Oracle Database 19c Enterprise Edition\x00" + struct.pack("<HB", 873, 1)
                + struct.pack("<H", 0) + struct.pack(">H", len(fdo)) + fdo + w.chunked(bytes(compile_caps))
                + w.chunked(bytes(runtime_caps)))

    def password_key(self) -> bytes:
        return hashlib.sha1(PASSWORD + self.vfr).digest() + bytes(4)

    def auth_one(self) -> bytes:
        sesskey = aes_cbc(self.password_key(), self.part_a).hex().upper()
        return (b"\x08" + w.ub(2) + pair(b"AUTH_SESSKEY", sesskey.encode()) + w.ub(0)
                + pair(b"AUTH_VFR_DATA", self.vfr.hex().upper().encode()) + w.ub(VERIFIER_11G) + status())

    def auth_two(self, payload: bytes) -> bytes:
        match = re.search(rb"AUTH_SESSKEY.{1,4}([0-9A-F]{96})", payload, re.S)
        if match is None:
            return error(1017, "ORA-01017: invalid username/password; logon denied")
        part_b = aes_cbc(self.password_key(), bytes.fromhex(match.group(1).decode()), decrypt=True)
        mixed = bytes(a ^ b for a, b in zip(self.part_a[16:40], part_b[16:40], strict=True))
        self.combo = (hashlib.md5(mixed[:16]).digest() + hashlib.md5(mixed[16:]).digest())[:24]
        password = re.search(rb"AUTH_PASSWORD.{1,4}([0-9A-F]{64,})", payload, re.S)
        if password is None or aes_cbc(self.combo, bytes.fromhex(password.group(1).decode()),
                                       decrypt=True)[16:16 + len(PASSWORD)] != PASSWORD:
            return error(1017, "ORA-01017: invalid username/password; logon denied")
        response = aes_cbc(self.combo, padded(os.urandom(16) + b"SERVER_TO_CLIENT")).hex().upper()
        params = [(b"AUTH_SVR_RESPONSE", response.encode()), (b"AUTH_VERSION_NO", b"318767104"),
                  (b"AUTH_SESSION_ID", b"42"), (b"AUTH_SERIAL_NUM", b"7"), (b"AUTH_DBNAME", b"ORCL"),
                  (b"AUTH_INSTANCENAME", b"orcl"), (b"AUTH_MAX_OPEN_CURSORS", b"300")]
        out = b"\x08" + w.ub(len(params))
        for key, value in params:
            out += pair(key, value) + w.ub(0)
        return out + status()

    def execute(self, payload: bytes) -> bytes:
        if b"missing_table" in payload:
            return error(942, "ORA-00942: table or view does not exist", position=14)
        return error(0, "", rowcount=1)


def function_code(payload: bytes) -> int:
    """The function of a call, past any piggybacked calls before it (17 ... 3 <code>)."""
    match = re.search(rb"\x03([\x05\x09\x0e\x0f\x5e\x73\x76\x87\x93\x4e\x04])", payload)
    return match.group(1)[0] if match and payload[0] == 17 else payload[1]


def pair(key: bytes, value: bytes) -> bytes:
    return w.text(key) + w.text(value)


def status() -> bytes:
    return b"\x09" + w.ub(0) + w.ub(0)


def error(number: int, message: str, rowcount: int = 0, position: int = 0) -> bytes:
    """An end-of-call error block (TTI_OER) in the 19c layout; number 0 is success."""
    out = b"\x04" + w.ub(0) + w.ub(0) + w.ub(0) + w.ub(min(number, 0xFFFF)) + w.ub(0) + w.ub(0)
    out += w.ub(1) + w.ub(position) + bytes(6)  # cursor id, error position; sql type .. warning flags
    out += w.ub(0) + w.ub(0) + b"\x00" + w.ub(0) + w.ub(0)  # rowid
    out += w.ub(0) + b"\x00\x00" + w.ub(0) + w.ub(0) + w.ub(0)  # os error, stmt/call no, padding, iters, oerrdd
    out += w.ub(0) + w.ub(0) + w.ub(0)  # batch errors, offsets, messages
    out += w.ub(number) + w.ub(rowcount)
    if number:
        out += w.chunked(message.encode())
    return out


def serve(host: str, port: int, redirect_port: int) -> socket.socket:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, port))
    server.listen(16)

    def loop() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            session = Session(conn, host, redirect_port, port == redirect_port)
            threading.Thread(target=session.run, daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return server


if __name__ == "__main__":
    host, port = sys.argv[1], int(sys.argv[2])
    redirect_port = int(sys.argv[3]) if len(sys.argv) > 3 else port + 1
    serve(host, port, redirect_port)
    serve(host, redirect_port, redirect_port)
    threading.Event().wait()
