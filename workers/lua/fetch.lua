-- Take up to ARGV[1] message ids for a worker and mark them unacked.
--
-- Same layout as Dramatiq's dispatch.lua, fewer calls: one LPOP with a count instead of
-- one per message, and the heartbeat only when the caller asks for it (it keeps its own
-- heartbeat fresh while it holds messages, so most fetches need none).
--
-- The ids come first from the consumer's "taken" list (where its blocking wait moved the
-- id that woke it, when ARGV[5] is "1"), then from the head of the queue list.
--
-- Ranked ids come first: an id "<rank>.<uuid>" (workers/redis_rank.py) outranks those
-- with a lower rank, a stock id ranks 0. When it takes from the queue, the script pops a
-- window of ARGV[6] ids off the head (or what it needs, if more), takes the highest
-- ranked of those and the taken ones, and pushes the rest back to the head highest
-- ranked first, in one LPUSH: the head of the queue stays in rank order, equal ranks
-- first come, first served. A window of 0 keeps the queue's order.
--
-- Acks of the worker's finished messages of this queue ride along (ARGV[7] onwards):
-- their data is deleted, then their ids leave the acks set, before the fetch.
--
-- A worker going from holding nothing to holding messages leaves a busy notice (its id in
-- the busy zset) when the fetch finds messages: an idle worker takes it and looks after
-- dead workers every heartbeat timeout while it sees a live heartbeat (workers/redis_watch.py).
--
-- KEYS: queue list, worker's acks set for the queue, queue's message hash, heartbeats zset,
--       consumer's taken list, busy notices zset
-- ARGV: count, flags (1: write the heartbeat, 2: leave a busy notice; summed), worker id,
--       timestamp (ms), look at taken ("1"/"0"), window, then the ids to ack
-- Returns: {more, id1, data1, id2, data2, ...}: more is 0 when the queue is known empty,
-- 1 when ids were pushed back (the queue holds more), 2 when the pop took all it asked
-- for and the queue may hold more; ids whose data is gone are dropped.

local queue, acks, messages, heartbeats, taken = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local count, flags, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[6])

if #ARGV > 6 then
    local acked = {unpack(ARGV, 7)}
    redis.call("hdel", messages, unpack(acked))
    redis.call("srem", acks, unpack(acked))
end

if flags % 2 == 1 then
    redis.call("zadd", heartbeats, ARGV[4], ARGV[3])
end

local function rank_of(id)
    return tonumber(string.match(id, "^(%d+)%.")) or 0
end

-- The first `count` of `candidates` by rank (highest first, stable), and the rest.
local function by_rank(candidates)
    local order = {}
    for i, id in ipairs(candidates) do
        order[i] = {rank_of(id), i, id}
    end
    table.sort(order, function(a, b)
        if a[1] ~= b[1] then
            return a[1] > b[1]
        end
        return a[2] < b[2]
    end)
    local chosen, rest = {}, {}
    for i, entry in ipairs(order) do
        if i <= count then
            chosen[#chosen + 1] = entry[3]
        else
            rest[#rest + 1] = entry[3]
        end
    end
    return chosen, rest
end

-- After a wait (ARGV[5] == "1") it also finds out whether the queue holds more than it
-- takes: it pops one id more than it needs and, if there was one, puts it back at the
-- head (a push that also wakes another idle consumer). A consumer woken by a group it
-- took whole then knows the queue is empty, without a fetch that finds nothing.
local ids, more = {}, 0
local probe = ARGV[5] == "1" and 1 or 0
if probe == 1 then
    ids = redis.call("lpop", taken, count) or {}
end
if #ids < count then
    local wanted = count - #ids
    local asked = math.max(wanted + probe, window - #ids)
    local popped = redis.call("lpop", queue, asked)
    if popped then
        for _, id in ipairs(popped) do
            ids[#ids + 1] = id
        end
        if #popped == asked and asked == wanted then
            more = 2
        end
    end
    if #ids > count then
        local rest
        ids, rest = by_rank(ids)
        for i = 1, math.floor(#rest / 2) do
            rest[i], rest[#rest + 1 - i] = rest[#rest + 1 - i], rest[i]
        end
        redis.call("lpush", queue, unpack(rest))
        more = 1
    end
end
if #ids == 0 then
    return {more}
end

redis.call("sadd", acks, unpack(ids))
if flags >= 2 then
    redis.call("zadd", KEYS[6], ARGV[4], ARGV[3])
end
local data = redis.call("hmget", messages, unpack(ids))
local result = {more}
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
