"""MySQL/MariaDB wire constants, and its length-encoded values read through the shared cursor."""

from __future__ import annotations

from agent.protocols.cursor import Cursor

# -- commands (the first payload byte of a client packet with sequence 0) ------------
COM_SLEEP = 0x00
COM_QUIT = 0x01
COM_INIT_DB = 0x02
COM_QUERY = 0x03
COM_FIELD_LIST = 0x04
COM_CREATE_DB = 0x05
COM_DROP_DB = 0x06
COM_REFRESH = 0x07
COM_SHUTDOWN = 0x08
COM_STATISTICS = 0x09
COM_PROCESS_INFO = 0x0A
COM_CONNECT = 0x0B
COM_PROCESS_KILL = 0x0C
COM_DEBUG = 0x0D
COM_PING = 0x0E
COM_TIME = 0x0F
COM_DELAYED_INSERT = 0x10
COM_CHANGE_USER = 0x11
COM_BINLOG_DUMP = 0x12
COM_TABLE_DUMP = 0x13
COM_CONNECT_OUT = 0x14
COM_REGISTER_SLAVE = 0x15
COM_STMT_PREPARE = 0x16
COM_STMT_EXECUTE = 0x17
COM_STMT_SEND_LONG_DATA = 0x18
COM_STMT_CLOSE = 0x19
COM_STMT_RESET = 0x1A
COM_SET_OPTION = 0x1B
COM_STMT_FETCH = 0x1C
COM_DAEMON = 0x1D
COM_BINLOG_DUMP_GTID = 0x1E
COM_RESET_CONNECTION = 0x1F
COM_CLONE = 0x20
COM_SUBSCRIBE_GROUP_REPLICATION_STREAM = 0x21
COM_STMT_BULK_EXECUTE = 0xFA  # MariaDB

COMMAND_NAMES: dict[int, str] = {
    COM_SLEEP: "SLEEP", COM_QUIT: "QUIT", COM_INIT_DB: "INIT_DB", COM_QUERY: "QUERY",
    COM_FIELD_LIST: "FIELD_LIST", COM_CREATE_DB: "CREATE_DB", COM_DROP_DB: "DROP_DB", COM_REFRESH: "REFRESH",
    COM_SHUTDOWN: "SHUTDOWN", COM_STATISTICS: "STATISTICS", COM_PROCESS_INFO: "PROCESS_INFO",
    COM_CONNECT: "CONNECT", COM_PROCESS_KILL: "PROCESS_KILL", COM_DEBUG: "DEBUG", COM_PING: "PING",
    COM_TIME: "TIME", COM_DELAYED_INSERT: "DELAYED_INSERT", COM_CHANGE_USER: "CHANGE_USER",
    COM_BINLOG_DUMP: "BINLOG_DUMP", COM_TABLE_DUMP: "TABLE_DUMP", COM_CONNECT_OUT: "CONNECT_OUT",
    COM_REGISTER_SLAVE: "REGISTER_SLAVE", COM_STMT_PREPARE: "STMT_PREPARE", COM_STMT_EXECUTE: "STMT_EXECUTE",
    COM_STMT_SEND_LONG_DATA: "STMT_SEND_LONG_DATA", COM_STMT_CLOSE: "STMT_CLOSE", COM_STMT_RESET: "STMT_RESET",
    COM_SET_OPTION: "SET_OPTION", COM_STMT_FETCH: "STMT_FETCH", COM_DAEMON: "DAEMON",
    COM_BINLOG_DUMP_GTID: "BINLOG_DUMP_GTID", COM_RESET_CONNECTION: "RESET_CONNECTION", COM_CLONE: "CLONE",
    COM_SUBSCRIBE_GROUP_REPLICATION_STREAM: "SUBSCRIBE_GROUP_REPLICATION_STREAM",
    COM_STMT_BULK_EXECUTE: "STMT_BULK_EXECUTE",
}

# Commands the server never answers.
NO_REPLY = frozenset({COM_QUIT, COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE})

# -- capability flags ------------------------------------------------------------------
CLIENT_MYSQL = 1  # MariaDB: unset by a MariaDB server that sends extended capabilities
CLIENT_CONNECT_WITH_DB = 8
CLIENT_COMPRESS = 0x20
CLIENT_LOCAL_FILES = 0x80
CLIENT_PROTOCOL_41 = 0x200
CLIENT_SSL = 0x800
CLIENT_SECURE_CONNECTION = 0x8000
CLIENT_MULTI_RESULTS = 1 << 17
CLIENT_PLUGIN_AUTH = 1 << 19
CLIENT_CONNECT_ATTRS = 1 << 20
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21
CLIENT_SESSION_TRACK = 1 << 23
CLIENT_DEPRECATE_EOF = 1 << 24
CLIENT_OPTIONAL_RESULTSET_METADATA = 1 << 25
CLIENT_ZSTD_COMPRESSION_ALGORITHM = 1 << 26
CLIENT_QUERY_ATTRIBUTES = 1 << 27
MARIADB_CLIENT_PROGRESS = 1 << 32
MARIADB_CLIENT_STMT_BULK_OPERATIONS = 1 << 34
MARIADB_CLIENT_EXTENDED_TYPE_INFO = 1 << 35
MARIADB_CLIENT_CACHE_METADATA = 1 << 36

# -- server status flags ----------------------------------------------------------------
SERVER_STATUS_CURSOR_EXISTS = 0x40
SERVER_MORE_RESULTS_EXISTS = 0x08

# -- column types ------------------------------------------------------------------------
T_DECIMAL = 0x00
T_TINY = 0x01
T_SHORT = 0x02
T_LONG = 0x03
T_FLOAT = 0x04
T_DOUBLE = 0x05
T_NULL = 0x06
T_TIMESTAMP = 0x07
T_LONGLONG = 0x08
T_INT24 = 0x09
T_DATE = 0x0A
T_TIME = 0x0B
T_DATETIME = 0x0C
T_YEAR = 0x0D
T_NEWDATE = 0x0E
T_VARCHAR = 0x0F
T_BIT = 0x10
T_TIMESTAMP2 = 0x11
T_DATETIME2 = 0x12
T_TIME2 = 0x13
T_JSON = 0xF5
T_NEWDECIMAL = 0xF6
T_ENUM = 0xF7
T_SET = 0xF8
T_TINY_BLOB = 0xF9
T_MEDIUM_BLOB = 0xFA
T_LONG_BLOB = 0xFB
T_BLOB = 0xFC
T_VAR_STRING = 0xFD
T_STRING = 0xFE
T_GEOMETRY = 0xFF

UNSIGNED_FLAG = 0x20

MAX_PACKET = 0xFFFFFF  # a payload of this length continues in the next packet

# -- length-encoded values over the shared cursor (every read past the payload raises ShortRead) --------


def lenenc(c: Cursor) -> int | None:
    """A length-encoded integer; None for the NULL marker 0xfb."""
    first = c.u8()
    if first < 0xFB:
        return first
    if first == 0xFC:
        return c.u16le()
    if first == 0xFD:
        return c.u24le()
    if first == 0xFE:
        return c.u64le()
    if first == 0xFB:
        return None
    raise c.short("length-encoded integer")  # 0xff is not a length


def lenenc_bytes(c: Cursor) -> bytes | None:
    n = lenenc(c)
    if n is None:
        return None
    return c.take(n)


def read_lenenc(data: bytes, pos: int) -> tuple[int | None, int]:
    """(value, next position) of the length-encoded integer at `pos`; raises ShortRead."""
    c = Cursor(data, pos, -1, "mysql")
    value = lenenc(c)
    return value, c.pos
