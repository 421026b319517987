-- B5 and B7: TRANSCRIPTS (comma-separated ids) take turns; each gets its own run of sequence
-- numbers, BATCH segments a request. wrk runs it in one thread (-t1).
local batch = tonumber(os.getenv("BATCH") or "1")
local transcripts = {}
for id in string.gmatch(os.getenv("TRANSCRIPTS"), "%d+") do
  transcripts[#transcripts + 1] = id
end
local next_sequence = {}
local turn = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

request = function()
  turn = turn % #transcripts + 1
  local transcript = transcripts[turn]
  local first = next_sequence[transcript] or 0
  next_sequence[transcript] = first + batch
  local items = {}
  for i = 1, batch do
    local n = first + i - 1
    items[i] = string.format(
      '{"sequence":%d,"speaker":"ana","start_ms":%d,"end_ms":%d,"text":"segment %d of the meeting"}',
      n, n * 1000, n * 1000 + 900, n)
  end
  return wrk.format(nil, "/transcripts/" .. transcript .. "/segments", nil, "[" .. table.concat(items, ",") .. "]")
end
