-- wrk script for the ingest benchmark (bench/ingest.py runs it).
--
-- Usage: wrk ... -s bench/webhooks.lua <url> -- <manifest.tsv>
-- Each manifest line is "<body file>\t<auth header name>\t<auth header value>", with the
-- body file beside the manifest. Every thread formats all requests once in init() and then
-- cycles through them, starting at its own offset. Response status codes are counted per
-- thread and summed in done(), printed as one line: "BENCH_STATUS <code>=<count> ...".

local thread_count = 0
local threads = {}

function setup(thread)
   thread:set("thread_index", thread_count)
   thread_count = thread_count + 1
   table.insert(threads, thread)
end

local prepared = {}
local position = 0
statuses = {}

function init(args)
   local manifest = args[1]
   local directory = manifest:match("^(.*)/[^/]*$") or "."
   for line in io.lines(manifest) do
      local file, name, value = line:match("^([^\t]+)\t([^\t]+)\t(.+)$")
      local handle = assert(io.open(directory .. "/" .. file, "rb"))
      local body = handle:read("*a")
      handle:close()
      local headers = { ["Content-Type"] = "application/json", [name] = value }
      table.insert(prepared, wrk.format("POST", nil, headers, body))
   end
   assert(#prepared > 0, "no requests in " .. manifest)
   position = ((thread_index or 0) * 97) % #prepared
end

function request()
   position = position % #prepared + 1
   return prepared[position]
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local total = {}
   for _, thread in ipairs(threads) do
      for status, count in pairs(thread:get("statuses")) do
         total[status] = (total[status] or 0) + count
      end
   end
   local parts = {}
   for status, count in pairs(total) do
      table.insert(parts, string.format("%d=%d", status, count))
   end
   io.write("BENCH_STATUS " .. table.concat(parts, " ") .. "\n")
end
