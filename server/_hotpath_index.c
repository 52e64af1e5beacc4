/* vimark's compiled reads of the validity index (server/index.py, server/index_lookup.py): its key
 * hashes (server/index_keys.py), the candidate ids of a key (ValidityIndex._hits, for by_plate and
 * by_vin) and the probe of a mark's vehicle that verify() makes (ValidityIndex.for_mark's plain case),
 * and read_at, the read of a checkpoint's text entry (index_text.TextOnFile).
 *
 * It reads the index through the attributes ValidityIndex and KeyLookup document for it: the rows
 * (index.ROW, whose layout server/hotpath.py checks before this module is used), a lookup's ids,
 * directory, bits and delta, and for verify() the index's lock and revoked serials.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h> /* first: its pyconfig.h defines _GNU_SOURCE, which preadv2 needs */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "_hotpath_index.h"

static PyObject *str_lock, *str_rows, *str_by_plate, *str_revoked, *str_delta, *str_ids, *str_directory, *str_bits,
    *str_acquire, *str_release;

int vm_index_names(void) {
#define NAME(var, text) if (!(var = PyUnicode_InternFromString(text))) return -1;
    NAME(str_lock, "_lock") NAME(str_rows, "_rows") NAME(str_by_plate, "_by_plate") NAME(str_revoked, "_revoked")
    NAME(str_delta, "delta") NAME(str_ids, "ids") NAME(str_directory, "directory") NAME(str_bits, "bits")
    NAME(str_acquire, "acquire") NAME(str_release, "release")
#undef NAME
    return 0;
}

/* ---- index_keys: MurmurHash3 fmix64 folded over zero-padded little-endian words --------------- */
static uint64_t fmix(uint64_t h) {
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ull;
    return h ^ (h >> 33);
}

uint64_t vm_fold(uint64_t seed, const unsigned char *key, Py_ssize_t n, Py_ssize_t width) {
    Py_ssize_t words = (width > n + 7 ? width : n + 7) / 8;
    uint64_t h = seed;
    for (Py_ssize_t w = 0; w < words; w++) {
        uint64_t x = 0;
        for (int k = 0; k < 8; k++) {
            Py_ssize_t at = w * 8 + k;
            if (at < n) x |= (uint64_t)key[at] << (8 * k);
        }
        h = fmix(h ^ x);
    }
    return h;
}


/* ---- the index probe: ValidityIndex.for_mark's first candidate, when its VIN hash agrees ------- */
static inline uint64_t u64_at(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline unsigned u16_at(const unsigned char *p) { return (unsigned)p[0] | (unsigned)p[1] << 8; }

/* A KeyLookup (server/index_lookup.py) and the index's rows, their buffers held for one probe. */
typedef struct {
    Py_buffer rows, ids, directory;
    PyObject *delta; /* owned */
    long bits;
} Arrays;

/* 0 opened (close it), -1 not (a Python error set, or none where the attributes are not what
   ValidityIndex documents). */
static int arrays_open(PyObject *rows, PyObject *lookup, Arrays *a) {
    PyObject *ids = NULL, *directory = NULL, *bits = NULL;
    a->delta = NULL;
    if (!(ids = PyObject_GetAttr(lookup, str_ids)) || !(directory = PyObject_GetAttr(lookup, str_directory)) ||
        !(bits = PyObject_GetAttr(lookup, str_bits)) || !(a->delta = PyObject_GetAttr(lookup, str_delta)))
        goto fail;
    a->bits = PyLong_AsLong(bits);
    if (a->bits < 1 || a->bits > 32 || !PyDict_Check(a->delta)) goto fail;
    if (PyObject_GetBuffer(rows, &a->rows, PyBUF_SIMPLE)) goto fail;
    if (PyObject_GetBuffer(ids, &a->ids, PyBUF_SIMPLE)) { PyBuffer_Release(&a->rows); goto fail; }
    if (PyObject_GetBuffer(directory, &a->directory, PyBUF_SIMPLE)) {
        PyBuffer_Release(&a->ids);
        PyBuffer_Release(&a->rows);
        goto fail;
    }
    Py_DECREF(ids); Py_DECREF(directory); Py_DECREF(bits); /* the buffers keep the arrays alive */
    return 0;
fail:
    Py_XDECREF(ids); Py_XDECREF(directory); Py_XDECREF(bits); Py_CLEAR(a->delta);
    return -1;
}

static void arrays_close(Arrays *a) {
    PyBuffer_Release(&a->directory);
    PyBuffer_Release(&a->ids);
    PyBuffer_Release(&a->rows);
    Py_DECREF(a->delta);
}

/* ValidityIndex._hits: the ids whose row carries hash h at `offset` and is present, the delta's
   newest first, then the base bucket's run, each once; at most `most` of them in out. The count
   (more than `most` when some did not fit), or -1 on a Python error. */
static Py_ssize_t hits_of(const Arrays *a, uint64_t h, int offset, long long *out, Py_ssize_t most) {
    const unsigned char *r = a->rows.buf;
    Py_ssize_t n_rows = a->rows.len / ROW_SIZE, n_ids = a->ids.len / 4, n_dir = a->directory.len / 4, count = 0;
    const uint32_t *idv = a->ids.buf, *dirv = a->directory.buf;
#define CARRIES(i) ((i) >= 0 && (i) < n_rows && u64_at(r + (i) * ROW_SIZE + offset) == h && (r[(i) * ROW_SIZE + 33] & 1))
    PyObject *key = PyLong_FromUnsignedLongLong(h);
    if (!key) return -1;
    PyObject *newest = PyDict_GetItemWithError(a->delta, key);
    Py_DECREF(key);
    if (!newest && PyErr_Occurred()) return -1;
    if (newest) {
        long long i = PyLong_AsLongLong(newest);
        if (i == -1 && PyErr_Occurred()) return -1;
        if (CARRIES(i) && count++ < most) out[0] = i;
    }
    uint64_t bucket = h >> (64 - a->bits);
    if ((Py_ssize_t)bucket + 1 < n_dir) {
        for (uint32_t k = dirv[bucket]; k < dirv[bucket + 1] && k < (uint32_t)n_ids; k++) {
            long long i = idv[k];
            if (!CARRIES(i)) continue;
            int seen = 0;
            for (Py_ssize_t j = 0; j < count && j < most; j++) seen |= out[j] == i;
            if (!seen && count++ < most) out[count - 1] = i;
        }
    }
#undef CARRIES
    return count;
}

/* 1 found (row filled), 0 not plainly found (the Python path decides), -1 a Python error. */
static int probe(PyObject *rows, PyObject *lookup, uint64_t plate_key, uint64_t vin_key, Row *row) {
    Arrays a;
    if (arrays_open(rows, lookup, &a)) return PyErr_Occurred() ? -1 : 0;
    /* for_mark's first candidate, when its VIN hash agrees */
    long long first;
    Py_ssize_t count = hits_of(&a, plate_key, 8, &first, 1);
    int found = 0;
    if (count > 0 && u64_at((const unsigned char *)a.rows.buf + first * ROW_SIZE + 16) == vin_key) {
        const unsigned char *at = (const unsigned char *)a.rows.buf + first * ROW_SIZE;
        row->serial = u64_at(at);
        row->valid_until = u16_at(at + 26);
        row->status = u16_at(at + 28);
        found = 1;
    }
    arrays_close(&a);
    return count < 0 ? -1 : found;
}

/* The index under its lock, taken without waiting. 1 found and not revoked, 0 otherwise: a lock
   held by a writer, and equally any error reading the index (cleared: the Python path reads the
   same index and reports what is wrong with it). */
int vm_probe_index(PyObject *index, uint64_t plate_key, uint64_t vin_key, uint64_t serial, Row *row) {
    PyObject *lock = PyObject_GetAttr(index, str_lock);
    if (!lock) { PyErr_Clear(); return 0; }
    PyObject *taken = PyObject_CallMethodOneArg(lock, str_acquire, Py_False);
    int got = taken == Py_True;
    Py_XDECREF(taken);
    if (!got) { PyErr_Clear(); Py_DECREF(lock); return 0; }
    int found = 0;
    PyObject *rows = NULL, *lookup = NULL, *revoked = NULL;
    if ((rows = PyObject_GetAttr(index, str_rows)) && (lookup = PyObject_GetAttr(index, str_by_plate)) &&
        (revoked = PyObject_GetAttr(index, str_revoked)) && probe(rows, lookup, plate_key, vin_key, row) == 1) {
        PyObject *s = PyLong_FromUnsignedLongLong(serial);
        found = s && PySet_Contains(revoked, s) == 0;
        Py_XDECREF(s);
    }
    PyErr_Clear();
    Py_XDECREF(rows); Py_XDECREF(lookup); Py_XDECREF(revoked);
    PyObject *released = PyObject_CallMethodNoArgs(lock, str_release);
    Py_DECREF(lock);
    if (!released) return -1; /* the lock is broken: say so */
    Py_DECREF(released);
    return found;
}


/* ValidityIndex._hits of the key hash h, by the same rules (column at `offset`): a list of ids, or
   None when there are too many to hold here (the Python path then finds them). */
#define MOST_HITS 16
static PyObject *hits_list(PyObject *rows, PyObject *lookup, uint64_t h, int offset) {
    Arrays a;
    if (arrays_open(rows, lookup, &a)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "not a KeyLookup and its rows");
        return NULL;
    }
    long long ids[MOST_HITS];
    Py_ssize_t count = hits_of(&a, h, offset, ids, MOST_HITS);
    arrays_close(&a);
    if (count < 0) return NULL;
    if (count > MOST_HITS) Py_RETURN_NONE;
    PyObject *list = PyList_New(count);
    for (Py_ssize_t k = 0; list && k < count; k++) {
        PyObject *i = PyLong_FromLongLong(ids[k]);
        if (!i) Py_CLEAR(list);
        else PyList_SET_ITEM(list, k, i);
    }
    return list;
}

/* plate_hits(rows, lookup, plate_type, plate_number_utf8), vin_hits(rows, lookup, vin_utf8) */
PyObject *vm_plate_hits(PyObject *self, PyObject *args) {
    PyObject *rows, *lookup;
    unsigned long plate_type;
    const char *plate;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "OOky#", &rows, &lookup, &plate_type, &plate, &size)) return NULL;
    return hits_list(rows, lookup, vm_fold(PLATE_SEED ^ plate_type, (const unsigned char *)plate, size, 16), 8);
}

PyObject *vm_vin_hits(PyObject *self, PyObject *args) {
    PyObject *rows, *lookup;
    const char *vin;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "OOy#", &rows, &lookup, &vin, &size)) return NULL;
    return hits_list(rows, lookup, vm_fold(VIN_SEED, (const unsigned char *)vin, size, 24), 16);
}

/* The hashes alone, for the tests that hold them to server/index_keys.py. */
PyObject *vm_key_hashes(PyObject *self, PyObject *args) {
    unsigned long plate_type;
    const char *plate, *vin;
    Py_ssize_t plate_len, vin_len;
    if (!PyArg_ParseTuple(args, "ky#y#", &plate_type, &plate, &plate_len, &vin, &vin_len)) return NULL;
    return Py_BuildValue("(KK)", (unsigned long long)vm_fold(PLATE_SEED ^ plate_type, (const unsigned char *)plate, plate_len, 16),
                         (unsigned long long)vm_fold(VIN_SEED, (const unsigned char *)vin, vin_len, 24));
}

/* read_at(fd, n, offset): os.pread(fd, n, offset), but a read the page cache answers whole keeps
 * the GIL. os.pread releases it for every call, and under load, with the server's threads queued
 * for it, getting it back costs a thread switch that is dearer than the read (load/README.md,
 * load.server_cpu: 12-24 % less server CPU per Lookup). RWF_NOWAIT returns EAGAIN rather than
 * wait for the disk; only then, or where the kernel lacks it, is the GIL released for the read. */
#define MOST_READ 4096
PyObject *vm_read_at(PyObject *self, PyObject *args) {
    int fd;
    Py_ssize_t n;
    long long offset;
    if (!PyArg_ParseTuple(args, "inL", &fd, &n, &offset)) return NULL;
    if (n < 0 || n > MOST_READ || offset < 0) {
        PyErr_Format(PyExc_ValueError, "read_at reads 0 to %d bytes at an offset of 0 or more", MOST_READ);
        return NULL;
    }
    char buffer[MOST_READ];
    ssize_t got = -1;
#if defined(__linux__) && defined(RWF_NOWAIT)
    struct iovec part = {buffer, (size_t)n};
    got = preadv2(fd, &part, 1, (off_t)offset, RWF_NOWAIT);
    if (got < 0 && errno != EAGAIN && errno != EOPNOTSUPP && errno != ENOSYS && errno != EINVAL)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (got >= 0 && got < n) got = -1; /* part cached, or the end of the file: the plain read decides */
#endif
    if (got < 0) {
        Py_BEGIN_ALLOW_THREADS
        got = pread(fd, buffer, (size_t)n, (off_t)offset);
        Py_END_ALLOW_THREADS
        if (got < 0) return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyBytes_FromStringAndSize(buffer, got);
}
