"""Logging: one logger for the whole proxy, plain lines, to one destination.

``[global] log`` chooses it (statsconfig.LogTarget): stderr (the default) or stdout, a file,
or syslog (``/dev/log``, or UDP to ``syslog@HOST:PORT``). ``setup_logging`` installs one
handler for it:

* stderr, stdout and a file: a ``LogWriter`` on the descriptor. A file is opened in append
  mode (several workers may share it) and, since logrotate moves it away and expects the
  writer to notice (USR1 and USR2 mean soft stop and reload here, as in HAProxy), the writer
  checks at most once a second whether the path still names the file it writes, and
  reopens it when not; ``reopen_log()`` reopens it at once (a master's reload).
* syslog: a ``SyslogWriter``, one RFC 5424 datagram per line (logformat.syslog_frame) on a
  non-blocking socket: when the socket takes no more, the line is dropped and counted,
  never waited for.

``dropped_log_lines()`` says how many lines were dropped (stats.dropped_logs, show info's
DroppedLogs).

A connection's line (``log_connection``, one per connection at ``log-level info``) costs
little: it goes to the writer without a LogRecord, as its facts and the function that
builds its text (sessionlog), the text before its message is made once a millisecond, and a
LogWriter batches such lines while the event loop serves it, building their text when it
writes them: the batch is written ``LOG_BATCH_DELAY`` after its first line (a loop timer),
at once when it reaches ``LOG_BATCH_LINES``, and when the loop closes (and ``flush()`` at
exit). So a busy proxy makes one ``write`` per batch to a file, and one per PIPE_BUF bytes
of lines (some twenty connections) to a pipe, where a write per loop turn carried three to
eight and cost 2-3.5 us a line. Every other line is written at once, after the batch, so
the order is kept.

Two things here protect the log from the traffic it describes:

* ``log_escape`` is the one way a byte a client chose (a Unix socket path, from the kernel or
  from a PROXY header; a TLV value) reaches a log line. Only printable ASCII other than the
  space and the backslash passes as it is; every other byte becomes ``\\xNN``. So a client
  can neither end a line nor colour a terminal, nor add a field: fields are separated by
  spaces.
* ``LogWriter`` never blocks the event loop. Stderr may be a pipe that nobody reads (or a
  stopped terminal); a blocking write there would stop every connection. It writes without
  blocking, keeps what the descriptor would not take (up to ``LOG_HOLD_LIMIT`` bytes; a line
  started is always finished), drops whole lines beyond that and counts them, and once the
  held bytes are out writes one line saying how many were dropped. The event loop writes the
  held bytes when the descriptor has room again (``on_held`` tells it to watch), and
  ``flush()`` writes them at exit.
"""
import logging
import os
import select
import socket
import stat
import sys
import time

from .errors import SimpleProxyError
from .logformat import syslog_frame

LOG = logging.getLogger("simpleproxy")

LOG_HOLD_LIMIT = 65536       # bytes of log lines held while stderr takes nothing (a pipe's worth)
LOG_BATCH_LINES = 128        # connection lines batched at most before they are written
LOG_BATCH_DELAY = 0.05       # seconds a connection line may wait for others to share its write
LOG_EXIT_FLUSH = 2.0         # seconds to wait at exit for stderr to take the held lines
LOG_FILE_CHECK = 1.0         # seconds between two checks that a log file was not moved away
LOG_FILE_MODE = 0o640
# logging's levels as syslog severities (RFC 5424: 3 error, 4 warning, 6 info, 7 debug).
_LOG_SEVERITIES = ((logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))

_LOG_ESCAPE_TABLE = {byte: chr(byte) if 0x21 <= byte <= 0x7e and byte != 0x5c else "\\x%02x" % byte
                     for byte in range(256)}       # for str.translate, over latin-1 text


def log_escape(value):
    """``value`` (bytes, or text decoded with 'surrogateescape' as socket paths and PROXY
    header paths are) as log text: printable ASCII except space and backslash as it is, every
    other byte as ``\\xNN``. Unambiguous: a backslash in the result always starts ``\\xNN``."""
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    return value.decode("latin-1").translate(_LOG_ESCAPE_TABLE)


class _LogLineFormatter(logging.Formatter):
    """``TIME.mmm simpleproxy[PID] LEVEL message``, for a LogRecord (``format``) and, the
    same text, for a connection's line that has none (``line``). The text before the message
    is made once per millisecond and level, not once per line (a busy proxy writes several
    lines a millisecond), and each second's time text once."""

    def __init__(self):
        logging.Formatter.__init__(self)
        self._tag = " simpleproxy[%d] " % os.getpid()
        # One tuple each, so that a thread never sees half of one.
        self._second = (None, "")
        self._head = (None, None, "")         # (millisecond, level, the text before a message)

    def formatMessage(self, record):
        return self.line(record.created, record.levelno, record.message)

    def line(self, created, levelno, message, end=""):
        """The line, and ``end`` after it in the same string (a newline for the writer)."""
        millisecond = int(created * 1000)
        last, last_level, head = self._head
        if millisecond != last or levelno != last_level:
            head = self._make_head(millisecond, levelno)
        return head + message + end

    def _make_head(self, millisecond, levelno):
        second, text = self._second
        if millisecond // 1000 != second:
            second = millisecond // 1000
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(second))
            self._second = (second, text)
        head = "%s.%03d%s%s " % (text, millisecond - second * 1000, self._tag,
                                 logging.getLevelName(levelno))
        self._head = (millisecond, levelno, head)
        return head


def _built_or_error(entry):
    """A batch entry with its message built already (``str`` its builder now), or an error
    line in its place when its builder raises: one builder's bug never costs the batch's
    other connections their lines."""
    created, levelno, build, facts = entry
    try:
        return created, levelno, str, build(facts)
    except Exception as exc:
        return (created, logging.ERROR, str,
                "a connection's log line could not be built: %r" % (exc,))


class LogWriter(logging.Handler):
    """Lines to a descriptor without ever blocking (see the module docstring).

    Lines come from the loop's thread and from health-check threads; the handler's lock
    (taken by ``handle`` and by ``add_line``, ``write_batch``, ``drain``) keeps them whole and
    in order. A connection's line (``add_line``) is batched while a loop serves the writer
    (it sets ``on_held``, and ``on_batch_started``, which it calls when a line starts a
    batch: the loop writes the batch LOG_BATCH_DELAY later). Any other line is written at
    once, after the batch.
    """

    def __init__(self, fd, path=None):
        """``path``: the log file ``fd`` was opened from, reopened when moved away."""
        logging.Handler.__init__(self)
        self.setFormatter(_LogLineFormatter())
        self.path = path
        mode = self._write_to(fd).st_mode
        self._next_check = time.monotonic() + LOG_FILE_CHECK
        self.batch = []              # connection lines not written: (time, level, build, facts)
        self.held = []               # encoded lines (the first possibly partly written)
        self.held_size = 0
        self.dropped = 0             # lines dropped since the last "dropped" line
        self.dropped_total = 0
        self.on_held = None          # the loop's: called once when lines start to be held
        self.on_batch_started = None     # the loop's: called when a line starts a batch
        # A regular file never waits for a reader; anything else (pipe, socket, terminal) can.
        self._was_blocking = None
        if not stat.S_ISREG(mode) and not stat.S_ISBLK(mode) and os.get_blocking(fd):
            self._was_blocking = True
            os.set_blocking(fd, False)

    def _write_to(self, fd):
        """Write to ``fd`` from now on; its os.fstat, which says what kind of file it is."""
        st = os.fstat(fd)
        self.fd = fd
        self._file_id = _log_file_id(st)
        self.whole_writes = stat.S_ISREG(st.st_mode)   # never cut by another process's write
        return st

    def emit(self, record):
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        self._write_batch(line)

    def add_line(self, levelno, build, facts):
        """A connection's line at level ``levelno``, ``build(facts)`` its message: batched
        (see the class docstring), and then the text a LogRecord would give, made without
        one."""
        created = time.time()
        with self.lock:
            batch = self.batch
            batch.append((created, levelno, build, facts))
            if self.on_held is None or len(batch) >= LOG_BATCH_LINES:
                self._write_batch()
            elif len(batch) == 1 and self.on_batch_started is not None:
                self.on_batch_started()

    def write_batch(self):
        """Write the batched lines now (the loop's batch timer, and the loop's close)."""
        with self.lock:
            self._write_batch()

    def _write_batch(self, last=None):
        """Write the batch, and then ``last`` (a line's text), holding what the descriptor does
        not take; the lock held.

        Workers share their master's stderr, so a line must never be cut by another
        process's write. A regular file takes each write whole, at its end: there the batch
        goes out in one write. A write to a pipe is whole only up to PIPE_BUF bytes: there
        it goes out in writes of whole lines of at most that size.
        """
        entries = self.batch
        if not entries and last is None:
            return
        self.batch = []
        try:
            texts = self._texts(entries)
        except Exception:
            texts = self._texts([_built_or_error(entry) for entry in entries])
        if last is not None:
            texts.append(last)
        if self.path is not None and time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + LOG_FILE_CHECK
            self._reopen_if_moved()
        if self.whole_writes and not self.held:
            data = "".join(texts).encode("utf-8", "backslashreplace")
            written = self._write(data, len(texts))
            if written < len(data):        # a full disk or a size limit: hold the rest
                self._hold_unwritten([text.encode("utf-8", "backslashreplace")
                                      for text in texts], written)
            return
        lines = [text.encode("utf-8", "backslashreplace") for text in texts]
        if self.held:
            for line in lines:
                self._hold(line)
            return
        while lines:
            count, size = 1, len(lines[0])
            while count < len(lines) and size + len(lines[count]) <= select.PIPE_BUF:
                size += len(lines[count])
                count += 1
            written = self._write(b"".join(lines[:count]), count)
            if written < size:
                self._hold_unwritten(lines, written)
                return
            lines = lines[count:]

    def _texts(self, entries):
        """The batched lines' texts, each with its newline."""
        line = self.formatter.line
        return [line(created, levelno, build(facts), "\n")
                for created, levelno, build, facts in entries]

    def _hold_unwritten(self, lines, written):
        """Hold the line the descriptor cut short whole, whatever its size (or the first not
        written at all), and the lines after it while they fit; ``written`` bytes went out."""
        for line in lines:
            if written >= len(line):
                written -= len(line)
            elif self.held:
                self._hold(line)
            else:
                self.held.append(line[written:])
                self.held_size = len(line) - written
                written = 0
        if self.on_held is not None:
            self.on_held()

    def _hold(self, line):
        """Keep an encoded line for later, or drop and count it beyond LOG_HOLD_LIMIT."""
        if self.held_size + len(line) > LOG_HOLD_LIMIT:
            self.dropped += 1
            self.dropped_total += 1
        else:
            self.held.append(line)
            self.held_size += len(line)

    def _write(self, data, lines):
        """Write what the descriptor takes now of ``lines`` lines; how many bytes that was."""
        try:
            return os.write(self.fd, data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            # Nobody will ever read them (EPIPE, EIO): count them as dropped, hold nothing.
            self.dropped += lines
            self.dropped_total += lines
            return len(data)

    def _reopen_if_moved(self):
        """Reopen the log file when its path names another file now, or none."""
        try:
            moved = _log_file_id(os.stat(self.path)) != self._file_id
        except OSError:
            moved = True
        if moved:
            self.reopen()

    def reopen(self):
        """Open the log file's path again (a new file if it is gone) and write there from
        now on; the old descriptor is closed. Kept as it is when the path cannot be opened."""
        if self.path is None:
            return
        self.acquire()
        try:
            try:
                fd = _open_log_file(self.path)
            except SimpleProxyError:
                return
            os.close(self.fd)
            self._write_to(fd)
        finally:
            self.release()

    def drain(self):
        """Write the held lines in one go; True once nothing is held. At the end comes the
        line that says how many were dropped, itself held if it does not fit at once."""
        self.acquire()
        try:
            while self.held:
                data = b"".join(self.held)
                written = self._write(data, len(self.held))
                rest = data[written:]
                self.held = [rest] if rest else []
                self.held_size = len(rest)
                if rest or not self.dropped:
                    break
                record = logging.LogRecord(LOG.name, logging.WARNING, "logs.py", 0,
                                           "dropped %d log lines: stderr was not taking them",
                                           (self.dropped,), None)
                self.dropped = 0
                self.held = [(self.format(record) + "\n").encode("utf-8")]
            return not self.held
        finally:
            self.release()

    def flush(self):
        """At exit: write the batch, and wait up to LOG_EXIT_FLUSH seconds for the descriptor
        to take what is held."""
        self.write_batch()
        deadline = time.monotonic() + LOG_EXIT_FLUSH
        while not self.drain():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            select.select([], [self.fd], [], left)

    def close(self):
        self.flush()
        if self._was_blocking:
            try:
                os.set_blocking(self.fd, True)   # a terminal shared with the shell stays usable
            except OSError:
                pass
        logging.Handler.close(self)


class SyslogWriter(logging.Handler):
    """Lines as RFC 5424 datagrams to syslog (see the module docstring)."""

    def __init__(self, family, address):
        logging.Handler.__init__(self)
        self.setFormatter(logging.Formatter("%(message)s"))   # the frame says the rest
        self.address = address
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.hostname = socket.gethostname()
        self.dropped_total = 0
        try:
            self.sock.connect(address)
        except OSError as exc:
            self.sock.close()
            raise SimpleProxyError("cannot log to syslog at %s: %s"
                                   % (address, exc.strerror or exc))

    def emit(self, record):
        try:
            frame = syslog_frame(self.format(record), record.created, self.hostname,
                                 os.getpid(), _log_severity(record.levelno))
        except Exception:
            self.handleError(record)
            return
        self._send(frame)

    def add_line(self, levelno, build, facts):
        """A connection's line: the frame a LogRecord would give, made without one."""
        self._send(syslog_frame(build(facts), time.time(), self.hostname, os.getpid(),
                                _log_severity(levelno)))

    def _send(self, frame):
        try:
            self.sock.send(frame)
        except OSError:           # full (EAGAIN, ENOBUFS), or nobody listening (ECONNREFUSED)
            self.dropped_total += 1

    def close(self):
        self.sock.close()
        logging.Handler.close(self)


_LINE_WRITERS = (LogWriter, SyslogWriter)


def _log_severity(levelno):
    for level, severity in _LOG_SEVERITIES:
        if levelno >= level:
            return severity
    return 7


def _log_file_id(st):
    return st.st_dev, st.st_ino


def _open_log_file(path):
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                       LOG_FILE_MODE)
    except OSError as exc:
        raise SimpleProxyError("cannot open the log file %s: %s" % (path, exc.strerror or exc))


def log_connection(levelno, build, facts):
    """Log one connection's line at ``levelno`` (the caller has checked LOG.isEnabledFor);
    ``build(facts)`` is its message.

    The writers setup_logging installs take it without a record, and write the same bytes a
    record would give: logging's LogRecord and handler chain cost more than building the
    line. Any other handler (a test's StringIO) gets a record."""
    handlers = LOG.handlers
    if len(handlers) == 1 and isinstance(handlers[0], _LINE_WRITERS):
        handlers[0].add_line(levelno, build, facts)
    else:
        LOG.log(levelno, "%s", build(facts))


def dropped_log_lines():
    """How many log lines the handler dropped since it was installed."""
    return sum(getattr(handler, "dropped_total", 0) for handler in LOG.handlers)


def reopen_log():
    """Reopen the log file, if the log goes to one (a master's reload)."""
    for handler in LOG.handlers:
        if isinstance(handler, LogWriter):
            handler.reopen()


def log_writer():
    """The LogWriter the proxy logs through, or None (a test logging into a StringIO)."""
    for handler in LOG.handlers:
        if isinstance(handler, LogWriter):
            return handler
    return None


def setup_logging(level="info", stream=None, target=None):
    """Send simpleproxy's log to ``target`` (a statsconfig.LogTarget; None: stderr), or to
    ``stream``, at ``level``.

    A stream with a descriptor gets a LogWriter on it; one without (a StringIO) a plain
    StreamHandler. Timestamps carry milliseconds because connection timings are logged in ms
    (syslog has its own, in the frame). Raises SimpleProxyError when the log file or syslog
    cannot be opened.
    """
    # The logging HOWTO's "Optimization" switches: what the format does not print is not
    # gathered (the pid goes into the format once; caller, thread and process names never).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    kind = target.kind if target is not None else None
    if kind == "file":
        handler = LogWriter(_open_log_file(target.destination), target.destination)
    elif kind == "syslog":
        handler = SyslogWriter(socket.AF_UNIX, target.destination)
    elif kind == "syslog-udp":
        family = socket.AF_INET6 if ":" in target.destination[0] else socket.AF_INET
        handler = SyslogWriter(family, target.destination)
    else:
        stream = stream or (sys.stdout if kind == "stdout" else sys.stderr)
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
            handler = logging.StreamHandler(stream)
        else:
            stream.flush()            # what was written through the stream goes first
            handler = LogWriter(fd)
    if not isinstance(handler, _LINE_WRITERS):
        handler.setFormatter(_LogLineFormatter())       # the writers bring their own
    for old in LOG.handlers:
        old.close()
    LOG.handlers[:] = [handler]
    LOG.setLevel(level.upper())
    LOG.propagate = False
