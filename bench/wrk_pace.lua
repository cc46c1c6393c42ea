-- Paced load for wrk (Debian's wrk has no --rate): every thread sends its share
-- of RATE requests per second on a fixed schedule (open loop while a connection
-- is free), and done() prints the figures as one JSON line.
--   wrk -t T -c C -d 30s -s wrk_pace.lua URL -- RATE T
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } mc_timespec;
  int clock_gettime(int clk_id, mc_timespec *tp);
]]
local ts = ffi.new("mc_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local interval_ms = 5
local next_slot = nil

function init(args)
  local rate = tonumber(args[1] or "200")
  local threads = tonumber(args[2] or "1")
  interval_ms = 1000 * threads / rate
end

function delay()
  local now = now_ms()
  if next_slot == nil then next_slot = now end
  next_slot = next_slot + interval_ms
  local wait = next_slot - now
  if wait < 0 then return 0 end
  return math.floor(wait)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "errors_connect": %d, ' ..
    '"errors_read": %d, "errors_write": %d, "errors_status": %d, "errors_timeout": %d, ' ..
    '"latency_ms": {"min": %.3f, "mean": %.3f, "max": %.3f, "p50": %.3f, "p90": %.3f, ' ..
    '"p99": %.3f, "p999": %.3f}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency.min / 1000, latency.mean / 1000, latency.max / 1000,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency:percentile(99.9) / 1000))
end
