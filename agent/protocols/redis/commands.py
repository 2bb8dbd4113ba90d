"""Command names: which requests are one word and which are a container plus a subcommand."""

from __future__ import annotations

# Packetbeat's one-word commands: their second argument is the resource, even when it
# looks like a subcommand (OBJECT ENCODING key -> method OBJECT, resource ENCODING).
ONE_WORD = frozenset({
    "APPEND", "AUTH", "BGREWRITEAOF", "BGSAVE", "BITCOUNT", "BITOP", "BITPOS", "BLPOP", "BRPOP", "BRPOPLPUSH",
    "DBSIZE", "DECR", "DECRBY", "DEL", "DISCARD", "DUMP", "ECHO", "EVAL", "EVALSHA", "EXEC", "EXISTS", "EXPIRE",
    "EXPIREAT", "FLUSHALL", "FLUSHDB", "GET", "GETBIT", "GETRANGE", "GETSET", "HDEL", "HEXISTS", "HGET",
    "HGETALL", "HINCRBY", "HINCRBYFLOAT", "HKEYS", "HLEN", "HMGET", "HMSET", "HSCAN", "HSET", "HSETINX", "HVALS",
    "INCR", "INCRBY", "INCRBYFLOAT", "INFO", "KEYS", "LASTSAVE", "LINDEX", "LINSERT", "LLEN", "LPOP", "LPUSH",
    "LPUSHX", "LRANGE", "LREM", "LSET", "LTRIM", "MGET", "MIGRATE", "MONITOR", "MOVE", "MSET", "MSETNX", "MULTI",
    "OBJECT", "PERSIST", "PEXPIRE", "PEXPIREAT", "PFADD", "PFCOUNT", "PFMERGE", "PING", "PSETEX", "PSUBSCRIBE",
    "PTTL", "PUBLISH", "PUBSUB", "PUNSUBSCRIBE", "QUIT", "RANDOMKEY", "RENAME", "RENAMENX", "RESTORE", "RPOP",
    "RPOPLPUSH", "RPUSH", "RPUSHX", "SADD", "SAVE", "SCAN", "SCARD", "SDIFF", "SDIFFSTORE", "SELECT", "SET",
    "SETBIT", "SETEX", "SETNX", "SETRANGE", "SHUTDOWN", "SINTER", "SINTERSTORE", "SISMEMBER", "SLAVEOF", "SLOWLOG",
    "SMEMBERS", "SMOVE", "SORT", "SPOP", "SRANDMEMBER", "SREM", "SSCAN", "STRLEN", "SUBSCRIBE", "SUNION",
    "SUNIONSTORE", "SYNC", "TIME", "TTL", "TYPE", "UNSUBSCRIBE", "UNWATCH", "WATCH", "ZADD", "ZCARD", "ZCOUNT",
    "ZINCRBY", "ZINTERSTORE", "ZRANGE", "ZRANGEBYSCORE", "ZRANK", "ZREM", "ZREMRANGEBYLEX", "ZREMRANGEBYRANK",
    "ZREMRANGEBYSCORE", "ZREVRANGE", "ZREVRANGEBYSCORE", "ZREVRANK", "ZSCAN", "ZSCORE", "ZUNIONSTORE",
})

# Commands whose first argument is a subcommand: the method is both words (CONFIG GET,
# CLIENT LIST) and the resource is the argument after them.  Packetbeat knows CLIENT,
# CONFIG, DEBUG and SCRIPT; the others are the containers of later Redis versions.
CONTAINERS = frozenset({
    "ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DEBUG", "FUNCTION", "LATENCY", "MEMORY", "MODULE", "SCRIPT",
    "XGROUP", "XINFO",
})

SUBSCRIBE = frozenset({"SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE"})
UNSUBSCRIBE = frozenset({"UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE"})
SUBSCRIPTION_REPLIES = frozenset({b"subscribe", b"psubscribe", b"ssubscribe", b"unsubscribe", b"punsubscribe",
                                  b"sunsubscribe"})
PUBSUB_MESSAGES = frozenset({b"message", b"pmessage", b"smessage"})


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def method_and_resource(args: tuple[bytes, ...], nargs: int) -> tuple[str, str]:
    """(method, resource) of a request, as Packetbeat shows them: upper-case method, raw resource."""
    if not args:
        return "", ""
    first = _text(args[0]).upper()
    if first in CONTAINERS and first not in ONE_WORD and nargs > 1 and len(args) > 1:
        method = f"{first} {_text(args[1]).upper()}"
        return method, _text(args[2]) if nargs > 2 and len(args) > 2 else ""
    return first, _text(args[1]) if nargs > 1 and len(args) > 1 else ""
