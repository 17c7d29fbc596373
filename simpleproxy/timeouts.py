"""The longest wait simpleproxy hands to the operating system.

A duration can be far longer than the kernel's waits take: epoll takes at most 2**31 - 1 ms
(about 24.8 days; Python's select() raises OverflowError beyond, "timestamp out of range for
platform time_t" for 20-digit values), and a socket timeout must fit a time_t. So every wait
given to the selector or to a socket is at most ``LONGEST_WAIT``. The configuration accepts
no longer duration (config_values.MAX_DURATION); the loop and the health checks clamp all the
same, so that no path to the kernel depends on where a duration came from. The loop rechecks
its timers when it wakes, so for it an early wake-up changes nothing; a health check waiting
on one socket longer than that (a connect, a reply) ends as a timeout after 24 days.
"""

LONGEST_WAIT = 24 * 86400.0      # seconds: one day short of epoll's limit
