# One node's concurrency slots, compiled: the same table and rules as the pure twin
# fastgw/limits/slots.py (read its docstring first), with the POSIX record lock replaced by
# a spin lock in the shared mapping, so taking and giving back a slot costs no system call.
#
# The lock word, after the entries, holds the pid of the process inside (0: free). A process
# that dies inside leaves its pid there; a waiter that has spun long finds that pid gone
# (kill(pid, 0) fails with ESRCH) and takes the lock over, as the kernel drops a dead
# holder's record lock for the pure twin. The entries have the pure twin's layout
# ("<QIiid", 28 bytes) so either twin reads a table the other wrote.

from libc.errno cimport errno, ESRCH
from libc.stdint cimport uint32_t, uint64_t, int32_t

import os

from fastgw.limits.slots import PROBE, SlotTableFull


cdef extern from "sys/mman.h" nogil:
    void* mmap(void* addr, size_t length, int prot, int flags, int fd, long offset)
    int munmap(void* addr, size_t length)
    int PROT_READ, PROT_WRITE, MAP_SHARED
    void* MAP_FAILED


cdef extern from "signal.h" nogil:
    int kill(int pid, int sig)


cdef extern from "sched.h" nogil:
    int sched_yield()


cdef extern from *:
    """
    #pragma pack(push, 1)
    typedef struct { uint64_t h; uint32_t pid; int32_t count; int32_t waiting; double oldest; } fg_entry;
    #pragma pack(pop)
    static inline int fg_cas(uint32_t *word, uint32_t expected, uint32_t desired) {
        return __atomic_compare_exchange_n(word, &expected, desired, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
    }
    static inline uint32_t fg_load(uint32_t *word) { return __atomic_load_n(word, __ATOMIC_RELAXED); }
    static inline void fg_release(uint32_t *word) { __atomic_store_n(word, 0, __ATOMIC_RELEASE); }
    """
    ctypedef struct fg_entry:
        uint64_t h
        uint32_t pid
        int32_t count
        int32_t waiting
        double oldest
    bint fg_cas(uint32_t* word, uint32_t expected, uint32_t desired) nogil
    uint32_t fg_load(uint32_t* word) nogil
    void fg_release(uint32_t* word) nogil


cdef enum:
    SPINS_BEFORE_CHECK = 4096  # yields before asking whether the holder still lives
    MAX_KEYS = 64  # keys one request may take slots of (rules that apply to it)

cdef int _probe = PROBE  # the pure twin's probe window, as a C constant
cdef uint32_t _pid = 0  # this process's pid, learnt on first use and forgotten in a forked child


def _forget_pid():
    global _pid
    _pid = 0


os.register_at_fork(after_in_child=_forget_pid)


cdef class SlotTable:
    """Per-key in-flight counts of one node; see fastgw/limits/slots.py."""

    cdef fg_entry* _entries
    cdef uint32_t* _lock_word
    cdef uint64_t _mask
    cdef size_t _size
    cdef int _fd
    cdef object __weakref__

    def __init__(self, int entries=4096):
        if entries < PROBE or entries & (entries - 1):
            raise ValueError(f"entries must be a power of two >= {PROBE}")
        self._mask = entries - 1
        self._size = entries * sizeof(fg_entry) + 64
        self._fd = os.memfd_create("fastgw-slots")
        os.ftruncate(self._fd, self._size)
        cdef void* base = mmap(NULL, self._size, PROT_READ | PROT_WRITE, MAP_SHARED, self._fd, 0)
        if base == MAP_FAILED:
            os.close(self._fd)
            raise OSError(errno, "mmap of the concurrency slot table failed")
        self._entries = <fg_entry*>base
        self._lock_word = <uint32_t*>(<char*>base + entries * sizeof(fg_entry))

    cpdef void _lock(self):
        global _pid
        cdef uint32_t holder
        cdef long spins = 0
        if _pid == 0:
            _pid = os.getpid()
        with nogil:
            while not fg_cas(self._lock_word, 0, _pid):
                spins += 1
                sched_yield()
                if spins % SPINS_BEFORE_CHECK == 0:
                    holder = fg_load(self._lock_word)
                    if holder != 0 and kill(holder, 0) == -1 and errno == ESRCH:
                        fg_cas(self._lock_word, holder, 0)  # its holder died inside: free it

    cdef inline void _unlock(self) noexcept nogil:
        fg_release(self._lock_word)

    cdef inline fg_entry* _at(self, uint64_t h, int i) noexcept nogil:
        return &self._entries[(h + i) & self._mask]

    cdef void _scan(self, uint64_t h, uint32_t pid, double arrival, bint any_waiter,
                    long* total, fg_entry** own, fg_entry** free, long* ahead) noexcept nogil:
        """As the pure twin's _scan; ``any_waiter``: arrival is None."""
        cdef fg_entry* e
        cdef int i
        total[0] = 0
        own[0] = NULL
        free[0] = NULL
        ahead[0] = 0
        for i in range(_probe):
            e = self._at(h, i)
            if e.h == 0:
                if free[0] == NULL:
                    free[0] = e
                return
            if e.h == h:
                total[0] += e.count
                if e.pid == pid:
                    own[0] = e
                if e.waiting > 0 and (any_waiter or (e.pid != pid and e.oldest < arrival)):
                    ahead[0] += e.waiting
            if e.count <= 0 and e.waiting <= 0 and free[0] == NULL:
                free[0] = e

    cdef void _give_back(self, uint64_t* hashes, int n, uint32_t pid) noexcept nogil:
        cdef long total, ahead
        cdef fg_entry* own
        cdef fg_entry* free
        cdef int i
        for i in range(n):
            self._scan(hashes[i], pid, 0.0, True, &total, &own, &free, &ahead)
            if own != NULL and own.count > 0:
                own.count -= 1

    def acquire(self, items, unsigned int pid, arrival=None, ahead_here=None):
        """Take one slot of every ``(key hash, limit)`` for ``pid``, or none of them; see the twin."""
        cdef int n = len(items)
        if n > MAX_KEYS:
            raise ValueError(f"at most {MAX_KEYS} keys per request")
        cdef uint64_t hashes[MAX_KEYS]
        cdef long limits[MAX_KEYS]
        cdef long totals[MAX_KEYS + 1]  # the last: scratch for the second scans
        cdef long aheads[MAX_KEYS]
        cdef fg_entry* owns[MAX_KEYS]
        cdef fg_entry* frees[MAX_KEYS]
        cdef fg_entry* free
        cdef int i
        cdef long extra
        cdef bint any_waiter = arrival is None
        cdef double when = 0.0 if any_waiter else arrival
        cdef bint allowed = True, full = False
        cdef fg_entry* e
        for i in range(n):
            h, limit = items[i]
            hashes[i] = h
            limits[i] = limit
            aheads[i] = ahead_here[i] if ahead_here is not None else 0
        self._lock()
        for i in range(n):
            self._scan(hashes[i], pid, when, any_waiter, &totals[i], &owns[i], &frees[i], &extra)
            aheads[i] += extra
        for i in range(n):
            if totals[i] + aheads[i] >= limits[i]:
                allowed = False
                break
        if allowed:
            for i in range(n):
                if owns[i] == NULL and frees[i] == NULL:
                    full = True
                    break
        if allowed and not full:
            for i in range(n):  # scanned again per key: an entry one key takes may be another's free one
                self._scan(hashes[i], pid, 0.0, True, &totals[n], &e, &free, &extra)
                if e != NULL:
                    e.count += 1
                elif free != NULL:
                    free.h = hashes[i]
                    free.pid = pid
                    free.count = 1
                    free.waiting = 0
                    free.oldest = 0.0
                else:  # an earlier key of this request took the last free entry: none of them then
                    self._give_back(hashes, i, pid)
                    full = True
                    break
        self._unlock()
        if full and allowed:
            raise SlotTableFull(f"all {PROBE} concurrency entries near a key are in use")
        return allowed, [totals[i] for i in range(n)]

    def set_waiting(self, uint64_t h, unsigned int pid, int waiting, double oldest, bound=None):
        """Record ``pid``'s waiters on key ``h``; see the twin."""
        cdef long total, everyone, count = 0, mine = 0
        cdef fg_entry* own
        cdef fg_entry* free
        cdef fg_entry* at
        cdef bint bounded = bound is not None
        cdef long limit = bound if bounded else 0
        self._lock()
        self._scan(h, pid, 0.0, True, &total, &own, &free, &everyone)
        if own != NULL:
            count, mine = own.count, own.waiting
        if bounded and everyone - mine + waiting > limit:
            self._unlock()
            return False
        at = own if own != NULL else free
        if at == NULL:
            self._unlock()
            if waiting <= 0:
                return True
            raise SlotTableFull(f"all {PROBE} concurrency entries near a key are in use")
        at.h = h
        at.pid = pid
        at.count = count
        at.waiting = waiting if waiting > 0 else 0
        at.oldest = oldest if waiting > 0 else 0.0
        self._unlock()
        return True

    def release(self, hashes, unsigned int pid):
        """Give back one slot of each key that ``pid`` took."""
        cdef int n = len(hashes)
        if n > MAX_KEYS:
            raise ValueError(f"at most {MAX_KEYS} keys per request")
        cdef uint64_t values[MAX_KEYS]
        cdef int i
        for i in range(n):
            values[i] = hashes[i]
        self._lock()
        self._give_back(values, n, pid)
        self._unlock()

    def release_pid(self, unsigned int pid):
        """Free every slot a (dead) worker held, and its queue places; returns how many slots."""
        cdef long freed = 0
        cdef uint64_t i
        cdef fg_entry* e
        fg_cas(self._lock_word, pid, 0)  # the worker died inside the lock: reaped, it frees it
        self._lock()
        for i in range(self._mask + 1):
            e = &self._entries[i]
            if e.pid == pid and (e.count > 0 or e.waiting > 0):
                if e.count > 0:
                    freed += e.count
                e.count = 0
                e.waiting = 0
                e.oldest = 0.0
        self._unlock()
        return freed

    def in_flight(self, uint64_t h):
        """How many slots of key ``h`` are taken on this node."""
        cdef long total, ahead
        cdef fg_entry* own
        cdef fg_entry* free
        self._lock()
        self._scan(h, 0xFFFFFFFF, 0.0, True, &total, &own, &free, &ahead)
        self._unlock()
        return total

    def waiting(self, uint64_t h):
        """How many requests of this node wait for a slot of key ``h``."""
        cdef long total, ahead
        cdef fg_entry* own
        cdef fg_entry* free
        self._lock()
        self._scan(h, 0xFFFFFFFF, 0.0, True, &total, &own, &free, &ahead)
        self._unlock()
        return ahead

    def close(self):
        if self._entries != NULL:
            munmap(self._entries, self._size)
            self._entries = NULL
            os.close(self._fd)
