-- ARGV 7 n, then n held members, then waiting members
-- -> {lost held, granted waiting, dropped waiting, waiters, ms until the earliest lease ends or -1}

purge()
local n = tonumber(ARGV[7])
local lost, granted, dropped = {}, {}, {}
for i = 8, 7 + n do
  local member = ARGV[i]
  if redis.call('ZSCORE', permits, member) then
    redis.call('ZADD', permits, now + lease, member)
  else
    lost[#lost + 1] = member
  end
end
for i = 8 + n, #ARGV do
  local member = ARGV[i]
  if redis.call('ZSCORE', permits, member) then
    granted[#granted + 1] = member
  elseif redis.call('ZSCORE', waiters, member) then
    redis.call('ZADD', waiters, now + claim, member)
    redis.call('PEXPIRE', line_of(owner_of(member)), idle)
  else
    dropped[#dropped + 1] = member
  end
end
dispatch('')
touch()
local first = redis.call('ZRANGE', permits, 0, 0, 'WITHSCORES')
local next_end = -1
if #first > 0 then next_end = tonumber(first[2]) - now end
return {lost, granted, dropped, redis.call('ZCARD', waiters), next_end}
