-- wrk script for the api benchmark (bench/api.py runs it): every request carries the
-- organization's token, read from BENCH_API_TOKEN (not from the command line, which any
-- process can read). Response codes are counted per thread and printed once, summed, as
-- "BENCH_STATUS <code>=<count> ...", as bench/webhooks.lua does.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

statuses = {}

function init(args)
   local token = os.getenv("BENCH_API_TOKEN")
   if token and token ~= "" then
      wrk.headers["Authorization"] = "Bearer " .. token
   end
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
