-- chat.lua's request, offered at a fixed rate (open loop, as wrk2 does): each wrk thread keeps
-- a timetable of BENCH_RATE / threads requests per second, and delay() holds every next request
-- until its slot. A connection that answers late does not slow the timetable down: the slots
-- it missed are sent at once (catching up), so the offered rate stays the rate asked for as
-- long as the connections are enough to carry it. wrk has no clock finer than os.time();
-- LuaJIT's FFI reads CLOCK_MONOTONIC.
dofile(assert(os.getenv("BENCH_CHAT_LUA"), "BENCH_CHAT_LUA is not set"))
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
    ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

-- (assert(...)) in parentheses: assert returns its message too, which tonumber would take as the base
local rate = tonumber((assert(os.getenv("BENCH_RATE"), "BENCH_RATE is not set")))
local interval = 1000 * tonumber(os.getenv("BENCH_THREADS") or "1") / rate  -- ms between this thread's slots
local next_slot

function delay()
    local now = now_ms()
    if next_slot == nil then next_slot = now end
    next_slot = next_slot + interval
    local wait = next_slot - now
    if wait <= 0 then return 0 end
    return math.floor(wait)
end
