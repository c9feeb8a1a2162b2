-- wrk script: the flash sale of `npm run bench` (scenario flash64) from outside the project's own tooling.
-- Each connection reserves 1 unit of one SKU with a fresh Idempotency-Key, then confirms (every other one) or
-- releases it. Usage (bench/wrk/run.sh does all of this per design):
--   SKU=flash-1 wrk -t1 -c64 -d10s --latency -s bench/wrk/flash.lua http://127.0.0.1:8080
-- wrk calls request() for a connection's next request without saying which connection it is, so each thread keeps
-- one queue of reservations to settle: the order differs from autocannon's, the mix is the same.

local sku = os.getenv("SKU") or "flash-1"
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

local counter = 0
local settled = 0
local pending = {}
counts = {} -- global: done() reads it from each thread

local reserve_body = '{"lines":[{"itemId":"' .. sku .. '","quantity":1}]}'

function request()
  local id = table.remove(pending)
  if id then
    settled = settled + 1
    local action = (settled % 2 == 0) and "confirm" or "release"
    return wrk.format("POST", "/reservations/" .. id .. "/" .. action)
  end
  counter = counter + 1
  return wrk.format("POST", "/reservations", {
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = "wrk-" .. tid .. "-" .. os.time() .. "-" .. counter,
  }, reserve_body)
end

function response(status, headers, body)
  local key = tostring(status)
  if status == 201 then
    local id = body:match('"id":"([^"]+)"')
    if id then table.insert(pending, id) end
  elseif status >= 400 then
    local code = body:match('"code":"([^"]+)"')
    if code then key = key .. " " .. code end
  end
  counts[key] = (counts[key] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    local c = thread:get("counts")
    for k, v in pairs(c) do total[k] = (total[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(total) do table.insert(parts, k .. "=" .. v) end
  table.sort(parts)
  io.write(string.format("outcomes %s\n", table.concat(parts, " ")))
  io.write(string.format("summary req/s=%.0f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
