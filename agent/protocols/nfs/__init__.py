"""NFS over ONC-RPC (TCP record marking): NFSv3 procedures and NFSv4.x COMPOUNDs, call paired with reply."""
