-- Counts the requests wrk sends. With a request() function wrk calls it once for
-- every request it writes; wrk's own "N requests in" counts completed responses and
-- leaves out the requests still in flight when the run ends (up to one per
-- connection). Prints "requests sent: N" after wrk's report. Used by bench/auth.py.
--
-- wrk also calls request() once on its first thread before the run, to check the
-- request (script_verify_request in wrk.c); that one is never sent, so the first
-- thread's count is one lower than its calls.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   calls = 0
   req = wrk.format() -- method, path and headers (--header) as wrk would send them
end

function request()
   calls = calls + 1
   return req
end

function done(summary, latency, requests)
   local total = 0
   for index, thread in ipairs(threads) do
      local sent = thread:get("calls")
      if index == 1 then
         sent = sent - 1 -- the check before the run
      end
      total = total + sent
   end
   io.write(string.format("requests sent: %d\n", total))
end
