-- POST /v1/query for one benchmark case: wrk ... -s query.lua URL -- CASE TOKEN
-- Cases: point (SELECT by primary key), range (100 rows), insert (one row).
-- Prints one JSON line (prefixed "BENCH ") with throughput, percentiles and
-- non-200 answers by status and problem code.

local cases = {
  point = {
    sql = "SELECT id, name, price, sku, added FROM items WHERE id = ?",
    params = function() return string.format("[%d]", math.random(1, 1000)) end,
  },
  range = {
    sql = "SELECT id, name, price, sku, added FROM items WHERE id > ? ORDER BY id LIMIT 100",
    params = function() return string.format("[%d]", math.random(0, 900)) end,
  },
  insert = {
    sql = "INSERT INTO orders (customer_id, item_id, quantity, ordered_at, note) VALUES (?, ?, ?, ?, ?)",
    params = function()
      return string.format('[%d, %d, %d, "2024-05-06 07:08:09", "bench"]',
        math.random(1, 3), math.random(1, 1000), math.random(1, 9))
    end,
  },
}

local threads = {}
local case, headers

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  case = cases[args[1]]
  if case == nil then error("unknown case " .. tostring(args[1])) end
  headers = { ["Content-Type"] = "application/json" }
  if args[2] and args[2] ~= "" then headers["Authorization"] = "Bearer " .. args[2] end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
  failures = {}
end

function request()
  local body = string.format('{"target": "shop", "sql": "%s", "params": %s}', case.sql, case.params())
  return wrk.format("POST", "/v1/query", headers, body)
end

function response(status, _, body)
  if status ~= 200 then
    local code = body and body:match('"code"%s*:%s*"([%w_]+)"') or "-"
    local key = status .. ":" .. code
    failures[key] = (failures[key] or 0) + 1
  end
end

function done(summary, latency, _)
  local merged = {}
  for _, thread in ipairs(threads) do
    local f = thread:get("failures")
    for key, count in pairs(f or {}) do merged[key] = (merged[key] or 0) + count end
  end
  local parts = {}
  for key, count in pairs(merged) do table.insert(parts, string.format('"%s": %d', key, count)) end
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"mean_us": %.1f, "socket_errors": %d, "non_200": {%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    table.concat(parts, ", ")))
end
