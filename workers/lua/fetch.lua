-- Take up to ARGV[1] message ids for a worker and mark them unacked.
--
-- Same layout as Dramatiq's dispatch.lua, fewer calls: one LPOP with a count instead of
-- one per message, and the heartbeat only when the caller asks for it (it keeps its own
-- heartbeat fresh while it holds messages, so most fetches need none).
--
-- The ids come first from the consumer's "taken" list (where its blocking wait moved the
-- id that woke it, when ARGV[5] is "1"), then from the head of the queue list.
--
-- Acks of the worker's finished messages of this queue ride along (ARGV[6] onwards):
-- their data is deleted, then their ids leave the acks set, before the fetch.
--
-- A worker going from holding nothing to holding messages leaves a busy notice (its id in
-- the busy zset) when the fetch finds messages: an idle worker takes it and looks after
-- dead workers every heartbeat timeout while it sees a live heartbeat (workers/redis_watch.py).
--
-- KEYS: queue list, worker's acks set for the queue, queue's message hash, heartbeats zset,
--       consumer's taken list, busy notices zset
-- ARGV: count, flags (1: write the heartbeat, 2: leave a busy notice; summed), worker id,
--       timestamp (ms), look at taken ("1"/"0"), then the ids to ack
-- Returns: {more, id1, data1, id2, data2, ...}: more is 1 when a probe found the queue
-- non-empty; ids whose data is gone are dropped.

local queue, acks, messages, heartbeats, taken = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local count, flags = tonumber(ARGV[1]), tonumber(ARGV[2])

if #ARGV > 5 then
    local acked = {unpack(ARGV, 6)}
    redis.call("hdel", messages, unpack(acked))
    redis.call("srem", acks, unpack(acked))
end

if flags % 2 == 1 then
    redis.call("zadd", heartbeats, ARGV[4], ARGV[3])
end

-- After a wait (ARGV[5] == "1") it also finds out whether the queue holds more than it
-- takes: it pops one id more than it needs and, if there was one, puts it back at the
-- head (a push that also wakes another idle consumer). A consumer woken by a group it
-- took whole then knows the queue is empty, without a fetch that finds nothing.
local ids, has_more = {}, 0
local probe = ARGV[5] == "1" and 1 or 0
if probe == 1 then
    ids = redis.call("lpop", taken, count) or {}
end
if #ids < count then
    local wanted = count - #ids
    local more = redis.call("lpop", queue, wanted + probe)
    if more then
        if #more > wanted then
            redis.call("lpush", queue, table.remove(more))
            has_more = 1
        end
        for _, id in ipairs(more) do
            ids[#ids + 1] = id
        end
    end
end
if #ids == 0 then
    return {has_more}
end

redis.call("sadd", acks, unpack(ids))
if flags >= 2 then
    redis.call("zadd", KEYS[6], ARGV[4], ARGV[3])
end
local data = redis.call("hmget", messages, unpack(ids))
local result = {has_more}
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
