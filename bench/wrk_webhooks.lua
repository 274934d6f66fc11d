-- wrk script of bench/receiver.py: POST the signed webhooks of a file (one a line:
-- id TAB timestamp TAB signature TAB body), each once, in order. wrk cannot compute an HMAC,
-- so the bench signs them beforehand. If the file runs out it starts again from the top; for the
-- receiver those would be duplicates, so the bench compares the requests made with the lines.
local requests, count, next_index = {}, 0, 0

function init(args)
  for line in io.lines(args[1]) do
    local id, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
    count = count + 1
    requests[count] = wrk.format("POST", "/webhooks/dodo", {
      ["webhook-id"] = id, ["webhook-timestamp"] = ts, ["webhook-signature"] = sig,
      ["Content-Type"] = "application/json"}, body)
  end
end

function request()
  next_index = next_index + 1
  if next_index > count then next_index = 1 end
  return requests[next_index]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "seconds": %.3f, "p50_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, ' ..
    '"non_2xx": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    latency.max / 1e3, e.status, e.connect, e.read, e.write, e.timeout))
end
