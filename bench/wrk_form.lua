-- wrk script: unique form posts (distinct people, distinct Idempotency-Keys) to /hooks/<connector>.
local counter = 0
local thread_id = 0
local run = os.time()
function setup(thread)
  thread:set("id", thread_id)
  thread_id = thread_id + 1
end
function init(args)
  path = args[1] or "/hooks/site-form"
end
function request()
  counter = counter + 1
  local n = id * 10000000 + counter
  local body = string.format(
    '{"name":"Bench %d","phone":"+7916%07d","email":"w%d-%d@example.com","message":"benchmark","utm_source":"bench"}',
    n, n % 10000000, n, run)
  local headers = {["Content-Type"] = "application/json", ["Idempotency-Key"] = string.format("%d-%d", run, n)}
  return wrk.format("POST", path, headers, body)
end
