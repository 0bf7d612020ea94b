-- Requeue the unacked messages of dead workers and drop expired dead letters.
--
-- What Dramatiq's dispatch.lua does on a random 0.1% of its calls, run on purpose and
-- for several queue names at once (a queue and its delay queue), without writing a
-- heartbeat: an idle worker holds nothing and needs none.
--
-- KEYS: namespace
-- A worker whose own heartbeat is stale holds nothing it knows of (it beats while it
-- holds anything), so its own leftovers (e.g. a requeue that failed) are requeued too.
--
-- ARGV: timestamp (ms), heartbeat timeout (ms), dead message ttl (ms), this worker's id,
--       canonical queue name, then every queue name to look after (e.g. "q", "q.DQ")
-- Returns: the number of messages requeued.

local namespace = KEYS[1]
local timestamp, heartbeat_timeout, dead_message_ttl = ARGV[1], ARGV[2], ARGV[3]
local canonical = ARGV[5]
local heartbeats = namespace .. ":__heartbeats__"
local requeued = 0

local dead_workers = redis.call("zrangebyscore", heartbeats, 0, timestamp - heartbeat_timeout)
for _, worker in ipairs(dead_workers) do
    do
        local worker_acks = namespace .. ":__acks__." .. worker
        for i = 6, #ARGV do
            local queue = namespace .. ":" .. ARGV[i]
            local acks = worker_acks .. "." .. ARGV[i]
            local ids = redis.call("smembers", acks)
            for _, id in ipairs(ids) do
                if redis.call("hexists", queue .. ".msgs", id) == 1 then
                    redis.call("rpush", queue, id)
                    requeued = requeued + 1
                end
            end
            if next(ids) then
                redis.call("del", acks)
            end
        end
        if not next(redis.call("keys", worker_acks .. "*")) then
            redis.call("zrem", heartbeats, worker)
        end
    end
end

local dead_letters = namespace .. ":" .. canonical .. ".XQ"
local expired = redis.call("zrangebyscore", dead_letters, 0, timestamp - dead_message_ttl, "LIMIT", 0, 1000)
if next(expired) then
    redis.call("zrem", dead_letters, unpack(expired))
    redis.call("hdel", dead_letters .. ".msgs", unpack(expired))
end
return requeued
