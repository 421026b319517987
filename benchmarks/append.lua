-- B5: POST a batch of BATCH segments with fresh sequence numbers on every request.
-- wrk runs this in one thread (-t1), so the counter is unique across its connections.
local batch = tonumber(os.getenv("BATCH") or "1")
local transcript = os.getenv("TRANSCRIPT")
local next_sequence = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

request = function()
  local items = {}
  for i = 1, batch do
    local n = next_sequence
    next_sequence = next_sequence + 1
    items[i] = string.format(
      '{"sequence":%d,"speaker":"ana","start_ms":%d,"end_ms":%d,"text":"segment %d of the meeting"}',
      n, n * 1000, n * 1000 + 900, n)
  end
  return wrk.format(nil, "/transcripts/" .. transcript .. "/segments", nil, "[" .. table.concat(items, ",") .. "]")
end
