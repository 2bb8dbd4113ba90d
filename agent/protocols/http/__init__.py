"""HTTP/1.x: parser, transactions and Packetbeat fields."""
