-- Fetch up to ARGV[1] message ids from a queue list and mark them unacked for a worker.
--
-- Same layout as Dramatiq's dispatch.lua, fewer calls: one LPOP with a count instead of
-- one per message, and the heartbeat only when the caller asks for it (it keeps its own
-- heartbeat fresh while it holds messages, so most fetches need none).
--
-- KEYS: queue list, worker's acks set for the queue, queue's message hash, heartbeats zset
-- ARGV: count, write_heartbeat ("1" or "0"), worker id, timestamp (ms)
-- Returns: a flat list {id1, data1, id2, data2, ...}; ids whose data is gone are dropped.

local queue, acks, messages, heartbeats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

if ARGV[2] == "1" then
    redis.call("zadd", heartbeats, ARGV[4], ARGV[3])
end

local ids = redis.call("lpop", queue, ARGV[1])
if not ids then
    return {}
end

redis.call("sadd", acks, unpack(ids))
local data = redis.call("hmget", messages, unpack(ids))
local result = {}
for i = 1, #ids do
    if data[i] then
        result[#result + 1] = ids[i]
        result[#result + 1] = data[i]
    else
        -- Acked or purged after it was queued: nothing to run, forget the id.
        redis.call("srem", acks, ids[i])
    end
end
return result
