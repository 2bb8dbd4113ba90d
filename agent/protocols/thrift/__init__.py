"""Apache Thrift (TBinary over TSocket or TFramed): calls paired with replies, as Packetbeat reports them."""
