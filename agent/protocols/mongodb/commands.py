"""Database commands recognised in a legacy OP_QUERY on `<db>.$cmd` (compared case-insensitively).

Packetbeat's list (from db.listCommands()), plus the later `hello`.  In an
OP_MSG the command is simply the body's first key.
"""

from __future__ import annotations

DATABASE_COMMANDS = frozenset(name.lower() for name in (
    "getLastError", "connPoolSync", "top", "dropIndexes", "explain", "grantRolesToRole", "dropRole",
    "dropAllRolesFromDatabase", "listCommands", "replSetReconfig", "replSetFresh", "writebacklisten",
    "setParameter", "update", "replSetGetStatus", "find", "resync", "appendOplogNote", "revokeRolesFromRole",
    "compact", "createUser", "replSetElect", "getPrevError", "serverStatus", "getShardVersion", "updateRole",
    "replSetFreeze", "getCmdLineOpts", "applyOps", "count", "aggregate", "copydbsaslstart", "distinct",
    "repairDatabase", "profile", "replSetStepDown", "findAndModify", "_transferMods", "filemd5", "forceerror",
    "getnonce", "saslContinue", "clone", "saslStart", "_getUserCacheGeneration", "_recvChunkCommit", "whatsmyuri",
    "repairCursor", "validate", "dbHash", "planCacheListFilters", "touch", "mergeChunks", "cursorInfo",
    "_recvChunkStart", "unsetSharding", "revokePrivilegesFromRole", "logout", "group", "shardConnPoolStats",
    "listDatabases", "buildInfo", "availableQueryOptions", "_isSelf", "splitVector", "geoSearch", "dbStats",
    "connectionStatus", "currentOpCtx", "copydb", "insert", "reIndex", "moveChunk", "cleanupOrphaned",
    "driverOIDTest", "isMaster", "getParameter", "replSetHeartbeat", "ping", "listIndexes", "dropUser",
    "dropDatabase", "dataSize", "convertToCapped", "planCacheSetFilter", "usersInfo", "grantPrivilegesToRole",
    "handshake", "_mergeAuthzCollections", "mapreduce.shardedfinish", "_recvChunkAbort", "authSchemaUpgrade",
    "replSetGetConfig", "replSetSyncFrom", "collStats", "replSetMaintenance", "createRole", "copydbgetnonce",
    "cloneCollectionAsCapped", "_migrateClone", "parallelCollectionScan", "connPoolStats", "revokeRolesFromUser",
    "authenticate", "create", "shutdown", "invalidateUserCache", "shardingState", "renameCollection",
    "replSetGetRBID", "splitChunk", "createIndexes", "updateUser", "cloneCollection", "logRotate",
    "planCacheListPlans", "medianKey", "hostInfo", "geoNear", "fsync", "checkShardingIndex", "getShardMap",
    "planCacheClear", "listCollections", "collMod", "_recvChunkStatus", "planCacheListQueryShapes", "delete",
    "planCacheClearFilters", "mapReduce", "rolesInfo", "eval", "drop", "grantRolesToUser", "resetError", "getLog",
    "dropAllUsersFromDatabase", "diagLogging", "replSetUpdatePosition", "setShardVersion", "replSetInitiate",
    "hello",
))

# OP_MSG body fields that are driver plumbing, not part of what the command asks.
PLUMBING = frozenset({"$db", "lsid", "$clusterTime", "$readPreference", "txnNumber", "autocommit",
                      "startTransaction", "$configServerState", "$replData", "$audit", "apiVersion", "apiStrict",
                      "apiDeprecationErrors"})


def is_database_command(key: str, value: object) -> bool:
    """Packetbeat's test: a known command name whose value is a string (the collection) or 1."""
    if key.lower() not in DATABASE_COMMANDS:
        return False
    if isinstance(value, str):
        return True
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value == 1
