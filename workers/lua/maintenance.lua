-- Requeue dead workers' messages, drop expired dead letters, report live workers.
--
-- What Dramatiq's dispatch.lua does on a random 0.1% of its calls, run on purpose and
-- for several queue names at once (a queue and its delay queue), without writing a
-- heartbeat: an idle worker holds nothing and needs none. Besides the acks sets of
-- Dramatiq's layout it looks after our consumers' "taken" lists (the id a blocking wait
-- moved, held for an instant until the fetch script takes it): those of dead workers and
-- those of workers with no heartbeat at all (a worker that died in that instant).
--
-- A worker whose own heartbeat is stale holds nothing it knows of (it beats while it
-- holds anything), so its own leftovers (e.g. a requeue that failed) are requeued too.
--
-- KEYS: namespace
-- ARGV: timestamp (ms), heartbeat timeout (ms), dead message ttl (ms), this worker's id,
--       sweep dead letters ("1"/"0"), canonical queue name, then every queue name to
--       look after (e.g. "q", "q.DQ")
-- Returns: {messages requeued, earliest time (ms) another live worker's heartbeat goes
--           stale (0: none), expired dead letters removed}

local namespace = KEYS[1]
local timestamp, heartbeat_timeout = tonumber(ARGV[1]), tonumber(ARGV[2])
local dead_message_ttl, self_id, sweep, canonical = tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]
local heartbeats = namespace .. ":__heartbeats__"
local acks_prefix = namespace .. ":__acks__."
local CHUNK = 1000
local requeued = 0

local function requeue(queue, ids)
    for _, id in ipairs(ids) do
        if redis.call("hexists", queue .. ".msgs", id) == 1 then
            redis.call("rpush", queue, id)
            requeued = requeued + 1
        end
    end
end

-- One read of the heartbeats: dead ones, and when the next live one may go stale.
local beats = redis.call("zrange", heartbeats, 0, -1, "WITHSCORES")
local alive, next_stale = {}, 0
for i = 1, #beats, 2 do
    local worker, score = beats[i], tonumber(beats[i + 1])
    if score > timestamp - heartbeat_timeout then
        alive[worker] = true
        local stale = score + heartbeat_timeout
        if worker ~= self_id and (next_stale == 0 or stale < next_stale) then
            next_stale = stale
        end
    else
        local worker_acks = acks_prefix .. worker
        for i = 7, #ARGV do
            local queue = namespace .. ":" .. ARGV[i]
            local acks = worker_acks .. "." .. ARGV[i]
            local ids = redis.call("smembers", acks)
            if next(ids) then
                requeue(queue, ids)
                redis.call("del", acks)
            end
        end
        if not next(redis.call("keys", worker_acks .. "*")) then
            redis.call("zrem", heartbeats, worker)
            -- and its busy notice, if no idle worker took it (workers/redis_watch.py)
            redis.call("zrem", namespace .. ":__busy__", worker)
        end
    end
end

-- Taken lists of workers that are not alive (dead, or never wrote a heartbeat).
for _, key in ipairs(redis.call("keys", acks_prefix .. "*.taken")) do
    local rest = string.sub(key, #acks_prefix + 1, -7)
    local dot = string.find(rest, ".", 1, true)
    if dot and not alive[string.sub(rest, 1, dot - 1)] then
        requeue(namespace .. ":" .. string.sub(rest, dot + 1), redis.call("lrange", key, 0, -1))
        redis.call("del", key)
    end
end

-- Expired dead letters, all of them, in chunks (Lua's unpack has a stack limit).
local removed = 0
if sweep == "1" then
    local dead_letters = namespace .. ":" .. canonical .. ".XQ"
    repeat
        local expired = redis.call(
            "zrangebyscore", dead_letters, 0, timestamp - dead_message_ttl, "LIMIT", 0, CHUNK
        )
        if next(expired) then
            redis.call("zrem", dead_letters, unpack(expired))
            redis.call("hdel", dead_letters .. ".msgs", unpack(expired))
            removed = removed + #expired
        end
    until #expired < CHUNK
end
return {requeued, next_stale, removed}
