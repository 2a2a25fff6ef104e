-- wrk's script for `python -m bench.load --client wrk` (bench/load.py starts wrk with one thread).
-- POSTs the benchmark's order body, records the first BENCH_N responses (status and run_id), then stops
-- sending and leaves the file BENCH_DONE for bench.load, which interrupts wrk; done() writes BENCH_REPORT.

local n = tonumber(os.getenv("BENCH_N"))
local key = os.getenv("BENCH_KEY")
local sent = 0
local threads = {}
statuses = {}
run_ids = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  wrk.headers["Content-Type"] = "application/json"
  if key and key ~= "" then
    wrk.headers["x-api-key"] = key
  end
end

function request()
  local i = sent
  sent = sent + 1
  local body = string.format('{"order": {"id": %d, "customer": {"name": "customer %d"}, "total": %.1f}}', i, i % 97, i * 1.5)
  return wrk.format("POST", nil, nil, body)
end

function response(status, headers, body)
  if #statuses >= n then
    return
  end
  statuses[#statuses + 1] = status
  run_ids[#run_ids + 1] = status == 202 and body:match('"run_id":%s*"([^"]+)"') or ""
  if #statuses == n then
    wrk.thread:stop()
    io.open(os.getenv("BENCH_DONE"), "w"):close()
  end
end

function done(summary, latency, requests)
  local results = {}
  for _, thread in ipairs(threads) do
    local codes, ids = thread:get("statuses"), thread:get("run_ids")
    for i, status in ipairs(codes) do
      results[#results + 1] = string.format('[%d, "%s"]', status, ids[i])
    end
  end
  -- A response slower than --timeout still reaches response() (and is counted as a timeout too): only the
  -- connection errors are requests without an answer; any other shortfall bench.load counts as unanswered.
  local errors = summary.errors
  local ms = "null"
  if #results > 0 then
    -- The quantiles at every tenth of a percent too: bench.run pools them over several rounds.
    local quantiles = {}
    for i = 0, 999 do
      quantiles[#quantiles + 1] = string.format("%.3f", latency:percentile(i / 10) / 1e3)
    end
    quantiles[#quantiles + 1] = string.format("%.3f", latency.max / 1e3) -- wrk's percentile(100) answers 0
    ms = string.format('{"p50": %.3f, "p95": %.3f, "p99": %.3f, "max": %.3f, "mean": %.3f, "quantiles": [%s]}',
      latency:percentile(50) / 1e3, latency:percentile(95) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3, latency.mean / 1e3,
      table.concat(quantiles, ", "))
  end
  local f = io.open(os.getenv("BENCH_REPORT"), "w")
  f:write(string.format('{"elapsed_s": %.6f, "errors": %d, "sent": %d, "latency_ms": %s, "results": [%s]}',
    summary.duration / 1e6, errors.connect + errors.read + errors.write, summary.requests, ms, table.concat(results, ", ")))
  f:close()
end
