-- B7 readers: a page of 200 segments, one room, a page of rooms, in turn.
local paths = {}
for path in string.gmatch(os.getenv("READ_PATHS"), "[^,]+") do
  paths[#paths + 1] = path
end
local turn = 0
request = function()
  turn = turn % #paths + 1
  return wrk.format("GET", paths[turn])
end
