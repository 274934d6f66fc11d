-- wrk script of bench/receiver.py. wrk's Lua cannot compute an HMAC, so the bench signs the
-- webhooks beforehand, one a line (id TAB timestamp TAB signature TAB body), and this script
-- POSTs them in order, each once; past the last line it starts again (duplicates, which the
-- bench refuses for the receiver by comparing wrk's request count with the lines).
local requests, count, index = {}, 0, 0

function init(args)
  for line in io.lines(args[1]) do
    local id, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
    count = count + 1
    requests[count] = wrk.format("POST", nil, {
      ["webhook-id"] = id, ["webhook-timestamp"] = ts, ["webhook-signature"] = sig,
      ["Content-Type"] = "application/json"}, body)
  end
end

function request()
  index = index % count + 1
  return requests[index]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "seconds": %.3f, "p50_ms": %.3f, "p99_ms": %.3f, "non_2xx": %d, ' ..
    '"socket_errors": %d}\n', summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(99) / 1e3, e.status, e.connect + e.read + e.write + e.timeout))
end
