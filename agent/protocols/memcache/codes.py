"""Memcache command tables: text commands, binary opcodes and status codes, with Packetbeat's names.

A `Command` says how a message's arguments are read and which fields its
event carries.  `args` lists argument kinds in order; a kind ending in `?`
is optional.  The names (`command`, `type`, opcode and status texts) are
the strings Packetbeat publishes, including its spelling `TOCHED` for the
TOUCHED reply.
"""

from __future__ import annotations

from dataclasses import dataclass

# Command classification (memcache.request.type / memcache.response.type).
UNKNOWN_TYPE = "UNKNOWN"
LOAD = "Load"
STORE = "Store"
DELETE = "Delete"
COUNTER = "Counter"
INFO = "Info"
SLAB_CTRL = "SlabCtrl"
LRU_CRAWLER = "LRUCrawler"
STATS = "Stats"
SUCCESS = "Success"
FAIL = "Fail"
AUTH = "Auth"


@dataclass(frozen=True, slots=True)
class Command:
    name: str  # memcache.*.command
    type: str  # memcache.*.type
    args: tuple[str, ...] = ()  # text: argument kinds; binary: extras kinds (request side)
    data: bool = False  # text: a data block follows the command line
    response_args: tuple[str, ...] = ()  # binary: extras kinds of the response
    value: str = ""  # binary: how a response value is read ("counter", "version", "stat")

    @property
    def is_quit(self) -> bool:
        return self.name == "quit"


_STORE_ARGS = ("key", "flags", "exptime", "bytes", "noreply?")

TEXT_REQUESTS: dict[bytes, Command] = {
    b"get": Command("get", LOAD, ("keys",)),
    b"gets": Command("gets", LOAD, ("keys",)),
    b"set": Command("set", STORE, _STORE_ARGS, data=True),
    b"add": Command("add", STORE, _STORE_ARGS, data=True),
    b"replace": Command("replace", STORE, _STORE_ARGS, data=True),
    b"append": Command("append", STORE, _STORE_ARGS, data=True),
    b"prepend": Command("prepend", STORE, _STORE_ARGS, data=True),
    b"cas": Command("cas", STORE, ("key", "flags", "exptime", "bytes", "cas", "noreply?"), data=True),
    b"incr": Command("incr", COUNTER, ("key", "delta", "noreply?")),
    b"decr": Command("decr", COUNTER, ("key", "delta", "noreply?")),
    b"touch": Command("touch", STORE, ("key", "exptime", "noreply?")),
    b"delete": Command("delete", DELETE, ("key", "noreply?")),
    # Packetbeat reads only the delay; memcached also accepts noreply here.
    b"flush_all": Command("flush_all", DELETE, ("exptime?", "noreply?")),
    b"stats": Command("stats", STATS, ("raw",)),
    b"verbosity": Command("verbosity", INFO, ("verbosity", "noreply?")),
    b"version": Command("version", INFO),
    b"quit": Command("quit", INFO, ("noreply?",)),
}

# Commands whose first argument picks the real command.
TEXT_SUBCOMMANDS: dict[bytes, dict[bytes, Command]] = {
    b"slabs": {
        b"reassign": Command("slabs reassign", SLAB_CTRL, ("source_class", "dest_class")),
        b"automove": Command("slabs automove", SLAB_CTRL, ("automove",)),
    },
    b"lru_crawler": {
        b"enable": Command("lru_crawler enable", LRU_CRAWLER),
        b"disable": Command("lru_crawler disable", LRU_CRAWLER),
        b"sleep": Command("lru_crawler sleep", LRU_CRAWLER, ("sleep_us",)),
        b"tocrawl": Command("lru_crawler tocrawl", LRU_CRAWLER, ("value",)),
        b"crawl": Command("lru_crawler tocrawl", LRU_CRAWLER, ("raw",)),
    },
}

VALUE_REPLY = Command("VALUE", LOAD, ("key", "flags", "bytes", "cas?"), data=True)
END_REPLY = Command("END", LOAD)
STAT_REPLY = Command("STAT", STATS, ("stat",))
COUNTER_REPLY = Command("<counter_op_res>", COUNTER)
UNKNOWN_COMMAND = Command("UNKNOWN", UNKNOWN_TYPE)

TEXT_REPLIES: dict[bytes, Command] = {
    b"VALUE": VALUE_REPLY,
    b"END": END_REPLY,
    b"STORED": Command("STORED", SUCCESS),
    b"NOT_STORED": Command("NOT_STORED", FAIL),
    b"EXISTS": Command("EXISTS", SUCCESS),
    b"NOT_FOUND": Command("NOT_FOUND", FAIL),
    b"TOUCHED": Command("TOCHED", SUCCESS),
    b"DELETED": Command("DELETED", SUCCESS),
    b"OK": Command("OK", SUCCESS),
    b"ERROR": Command("ERROR", FAIL),
    b"CLIENT_ERROR": Command("CLIENT_ERROR", FAIL, ("error_msg",)),
    b"SERVER_ERROR": Command("SERVER_ERROR", FAIL, ("error_msg",)),
    b"BUSY": Command("BUSY", FAIL, ("error_msg",)),
    b"BADCLASS": Command("BADCLASS", FAIL, ("error_msg",)),
    b"NOSPARE": Command("NOSPARE", FAIL, ("error_msg",)),
    b"NOTFULL": Command("NOTFULL", FAIL, ("error_msg",)),
    b"UNSAFE": Command("UNSAFE", FAIL, ("error_msg",)),
    b"SAME": Command("SAME", FAIL, ("error_msg",)),
    b"STAT": STAT_REPLY,
    b"VERSION": Command("VERSION", INFO, ("version",)),
}

# Text replies whose transaction status is "Client Error" / "Server Error" (others failing: "Error").
CLIENT_ERROR_REPLIES = frozenset({"CLIENT_ERROR", "SAME"})
SERVER_ERROR_REPLIES = frozenset({"SERVER_ERROR", "BUSY", "BADCLASS", "NOSPARE", "NOTFULL", "UNSAFE"})

# -- binary protocol ------------------------------------------------------------

MAGIC_REQUEST = 0x80
MAGIC_RESPONSE = 0x81
HEADER_SIZE = 24

OPCODE_NAMES: dict[int, str] = {
    0x00: "Get", 0x01: "Set", 0x02: "Add", 0x03: "Replace", 0x04: "Delete", 0x05: "Increment",
    0x06: "Decrement", 0x07: "Quit", 0x08: "Flush", 0x09: "GetQ", 0x0A: "No-op", 0x0B: "Version",
    0x0C: "GetK", 0x0D: "GetKQ", 0x0E: "Append", 0x0F: "Prepend", 0x10: "Stat", 0x11: "SetQ", 0x12: "AddQ",
    0x13: "ReplaceQ", 0x14: "DeleteQ", 0x15: "IncrementQ", 0x16: "DecrementQ", 0x17: "QuitQ", 0x18: "FlushQ",
    0x19: "AppendQ", 0x1A: "PrependQ", 0x1B: "Verbosity", 0x1C: "Touch", 0x1D: "GAT", 0x1E: "GATQ",
    0x20: "SASL list mechs", 0x21: "SASL Auth", 0x22: "SASL Step", 0x23: "GatK", 0x24: "GatKQ", 0x30: "RGet",
    0x31: "RSet", 0x32: "RSetQ", 0x33: "RAppend", 0x34: "RAppendQ", 0x35: "RPrepend", 0x36: "RPrependQ",
    0x37: "RDelete", 0x38: "RDeleteQ", 0x39: "RIncr", 0x3A: "RIncrQ", 0x3B: "RDecr", 0x3C: "RDecrQ",
    0x3D: "Set VBucket", 0x3E: "Get VBucket", 0x3F: "Del VBucket", 0x40: "TAP Connect", 0x41: "TAP Mutation",
    0x42: "TAP Delete", 0x43: "TAP Flush", 0x44: "TAP Opaque", 0x45: "TAP VBucket Set",
    0x46: "TAP Checkpoint Start", 0x47: "TAP Checkpoint End",
}

OP_NOOP = 0x0A
OP_QUITQ = 0x17
OP_STAT = 0x10

QUIET_OPCODES = frozenset({0x09, 0x0D, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1E, 0x24,
                           0x32, 0x34, 0x36, 0x38, 0x3A, 0x3C})
# Quiet reads answer a hit; the other quiet commands answer only an error.
QUIET_READS = frozenset({0x09, 0x0D, 0x1E, 0x24})

STATUS_NAMES: dict[int, str] = {
    0x00: "Success", 0x01: "Key not found", 0x02: "Key exists", 0x03: "Value too large", 0x04: "Invalid arguments",
    0x05: "Item not stored", 0x06: "Incr/Decr on non-numeric value.", 0x07: "The vbucket belongs to another server",
    0x20: "Authentication error", 0x21: "Authentication continue", 0x81: "Unknown command", 0x82: "Out of memory",
    0x83: "Not supported", 0x84: "Internal error", 0x85: "Busy", 0x86: "Temporary failure",
}

_GET = Command("get", LOAD, response_args=("flags",))
_DELETE = Command("delete", DELETE)
_FLUSH = Command("delete", DELETE, ("exptime",))
_COUNTER_ARGS = ("delta", "initial", "exptime")

BINARY_UNKNOWN = Command("UNKNOWN", UNKNOWN_TYPE)

BINARY_COMMANDS: dict[int, Command] = {
    **dict.fromkeys((0x00, 0x0C, 0x0D, 0x09), _GET),
    **dict.fromkeys((0x04, 0x14), _DELETE),
    **dict.fromkeys((0x08, 0x18), _FLUSH),
    **dict.fromkeys((0x01, 0x11), Command("set", STORE, ("flags", "exptime"))),
    **dict.fromkeys((0x02, 0x12), Command("add", STORE, ("flags", "exptime"))),
    **dict.fromkeys((0x03, 0x13), Command("replace", STORE, ("flags", "exptime"))),
    **dict.fromkeys((0x0E, 0x19), Command("append", STORE)),
    **dict.fromkeys((0x0F, 0x1A), Command("prepend", STORE)),
    0x0A: Command("noop", INFO),
    **dict.fromkeys((0x05, 0x15), Command("incr", COUNTER, _COUNTER_ARGS, value="counter")),
    **dict.fromkeys((0x06, 0x16), Command("decr", COUNTER, _COUNTER_ARGS, value="counter")),
    **dict.fromkeys((0x07, 0x17), Command("quit", INFO)),
    0x0B: Command("version", INFO, value="version"),
    0x1C: Command("touch", STORE, ("exptime",)),
    0x1B: Command("verbosity", INFO, ("verbosity32",)),
    0x20: Command("sasl_list", AUTH),
    0x21: Command("sasl_auth", AUTH),
    0x22: Command("sasl_step", AUTH),
    0x10: Command("stats", STATS, value="stat"),
}

# Extras sizes of the binary argument kinds.
EXTRA_SIZES = {"flags": 4, "exptime": 4, "delta": 8, "initial": 8, "verbosity32": 4}
