/* vimark's Verify hot path in one compiled call: QR text -> Base45 -> seal -> body -> key ->
 * signature -> validity index -> VALID, or "ask the Python path".
 *
 * The Python path (client/certificate.py, client/trust.py, client/judging.py, server/verifier.py)
 * is the specification and stays the only source of every verdict but one: this code answers only
 * when a mark is plainly VALID, returning its fields, and otherwise returns None, and the caller
 * runs the Python path, which gives the verdict and its explanation. So anything unusual (another
 * verdict, an odd but legal encoding, a lock held by a writer) costs the Python path, never a
 * different answer. Three more answers: FORGED_SIGNATURE (the seal opened, the key is known, the
 * Ed25519 signature fails: step 8's verdict), AUTHENTIC (None, but with steps 1-8 passed here, so
 * the Python path judges without checking the signature again) and, with check_signature false,
 * the VALID fields with the signed triple for the caller's signature engine (VerifyBatch).
 *
 * Cryptography is libsodium's, the copy PyNaCl already loads: server/hotpath.py hands over the
 * addresses of crypto_sign_open and crypto_aead_chacha20poly1305_ietf_decrypt, so nothing here links
 * a library and `pip install .` needs only a C compiler. The signature is checked with the GIL released.
 *
 * The index is read under its lock (taken without waiting: a writer holding it sends the call to the
 * Python path, which waits), by _hotpath_index.c.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_hotpath_index.h"

typedef int (*sign_open_fn)(unsigned char *, unsigned long long *, const unsigned char *, unsigned long long,
                            const unsigned char *);
typedef int (*aead_decrypt_fn)(unsigned char *, unsigned long long *, unsigned char *, const unsigned char *,
                               unsigned long long, const unsigned char *, unsigned long long, const unsigned char *,
                               const unsigned char *);

static sign_open_fn sign_open;
static aead_decrypt_fn aead_decrypt;

#define MAX_TEXT 1024                  /* certificate.MAX_QR_TEXT_LENGTH */
#define MAX_ENVELOPE (MAX_TEXT / 3 * 2 + 2)
#define SIG 64
#define SEAL_HEADER 15 /* 0x01 | seal key id (2) | nonce (12) */
#define TAG 16
#define DOMAIN "vimark/v1/mark\0"
#define DOMAIN_SIZE 15

/* ---- the rules' constants, set once by configure() ------------------------------------------ */
static uint64_t plate_types[2], reasons, presentations;
static long long first_month, last_month, last_day, first_instant, last_instant;
static unsigned long blocks_road_mask;
static int presentation_online;

static int8_t b45_value[256];

static void init_b45(void) {
    const char *alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";
    memset(b45_value, -1, sizeof b45_value);
    for (int i = 0; i < 45; i++) b45_value[(unsigned char)alphabet[i]] = (int8_t)i;
}

/* Strict Base45 (RFC 9285), as client/base45.py: -1 on any departure. */
static Py_ssize_t b45decode(const unsigned char *s, Py_ssize_t n, unsigned char *out) {
    if (n % 3 == 1) return -1;
    Py_ssize_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        int a = b45_value[s[i]], b = b45_value[s[i + 1]], c = b45_value[s[i + 2]];
        if ((a | b | c) < 0) return -1;
        long v = a + b * 45L + c * 2025L;
        if (v > 0xFFFF) return -1;
        out[o++] = (unsigned char)(v >> 8);
        out[o++] = (unsigned char)v;
    }
    if (i < n) {
        int a = b45_value[s[i]], b = b45_value[s[i + 1]];
        if ((a | b) < 0) return -1;
        long v = a + b * 45L;
        if (v > 0xFF) return -1;
        out[o++] = (unsigned char)v;
    }
    return o;
}

/* ---- the body: the canonical protobuf subset whose reading is certainly upb's ---------------- */
typedef struct {
    uint64_t serial;
    const unsigned char *plate, *vin;
    Py_ssize_t plate_len, vin_len;
    uint64_t plate_type, valid_until, reason, presentation, valid_from_day;
    int64_t issued_at, expires_at;
} Body;

/* A varint of at most `most` bytes (10 for a number; upb reads a length from at most 5). */
static int varint_of(const unsigned char **p, const unsigned char *end, uint64_t *value, int most) {
    uint64_t v = 0;
    for (int shift = 0; shift < 7 * most; shift += 7) {
        if (*p >= end) return -1;
        unsigned char byte = *(*p)++;
        if (shift == 63 && byte > 1) return -1; /* more than 64 bits: upb's reading differs */
        v |= (uint64_t)(byte & 0x7F) << shift;
        if (!(byte & 0x80)) {
            *value = v;
            return 0;
        }
    }
    return -1;
}

/* Fields 1-10, each once, with their declared wire types; anything else -> -1 (the Python path). */
static int parse_body(const unsigned char *p, const unsigned char *end, Body *b) {
    memset(b, 0, sizeof *b);
    unsigned seen = 0;
    while (p < end) {
        unsigned tag = *p++;
        if (tag & 0x80) return -1;
        unsigned field = tag >> 3, wire = tag & 7;
        if (field < 1 || field > 10 || (seen & (1u << field))) return -1;
        seen |= 1u << field;
        if (field == 2 || field == 4) {
            uint64_t len;
            if (wire != 2 || varint_of(&p, end, &len, 5) || len > (uint64_t)(end - p)) return -1;
            if (field == 2) b->plate = p, b->plate_len = (Py_ssize_t)len;
            else b->vin = p, b->vin_len = (Py_ssize_t)len;
            p += len;
            continue;
        }
        uint64_t v;
        if (wire != 0 || varint_of(&p, end, &v, 10)) return -1;
        switch (field) {
        case 1: b->serial = v; break;
        case 3: if (v > 0xFFFFFFFFu) return -1; b->plate_type = v; break;
        case 5: if (v > 0xFFFFFFFFu) return -1; b->valid_until = v; break;
        case 6: b->issued_at = (int64_t)v; break;
        case 7: if (v > 0x7FFFFFFF) return -1; b->reason = v; break;
        case 8: if (v > 0x7FFFFFFF) return -1; b->presentation = v; break;
        case 9: b->expires_at = (int64_t)v; break;
        case 10: if (v > 0xFFFFFFFFu) return -1; b->valid_from_day = v; break;
        }
    }
    return 0;
}

/* CertificateBody.from_bytes's form checks. */
static int body_in_form(const Body *b) {
    if (b->plate_type >= 128 || !((plate_types[b->plate_type >> 6] >> (b->plate_type & 63)) & 1)) return 0;
    if (!b->serial || !b->plate_len) return 0;
    if (b->reason >= 64 || !((reasons >> b->reason) & 1)) return 0;
    if (b->presentation >= 64 || !((presentations >> b->presentation) & 1)) return 0;
    return (long long)b->valid_until >= first_month && (long long)b->valid_until <= last_month &&
           (long long)b->valid_from_day <= last_day && b->issued_at >= first_instant && b->issued_at <= last_instant;
}

/* ---- verify(text, seal_keys, keys, index, now, on_day, on_month, check_signature) ------------ */
/* -> the VALID tuple, FORGED_SIGNATURE, AUTHENTIC or None (see the top of this file). */
static PyObject *FORGED_SIGNATURE, *AUTHENTIC;

static PyObject *verify(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) { PyErr_SetString(PyExc_TypeError, "verify takes 8 arguments"); return NULL; }
    PyObject *text = args[0], *seal_keys = args[1], *keys = args[2], *index = args[3];
    double now = PyFloat_AsDouble(args[4]);
    long long on_day = PyLong_AsLongLong(args[5]), on_month = PyLong_AsLongLong(args[6]);
    int check_signature = PyObject_IsTrue(args[7]);
    if (PyErr_Occurred() || check_signature < 0) return NULL;
    if (!PyUnicode_Check(text) || !PyDict_Check(seal_keys) || !PyDict_Check(keys)) {
        PyErr_SetString(PyExc_TypeError, "verify(str, dict, dict, index, ...)");
        return NULL;
    }
    /* 1-3. Bound, prefix, Base45 (ASCII only: anything else is the Python path's to refuse). */
    if (!PyUnicode_IS_ASCII(text)) Py_RETURN_NONE;
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    const unsigned char *s = PyUnicode_1BYTE_DATA(text);
    if (n > MAX_TEXT || n < 4 || memcmp(s, "VM1:", 4)) Py_RETURN_NONE;
    unsigned char envelope[MAX_ENVELOPE], opened[MAX_ENVELOPE];
    Py_ssize_t size = b45decode(s + 4, n - 4, envelope);
    if (size < 1) Py_RETURN_NONE;
    /* 4. The seal. */
    const unsigned char *inner;
    Py_ssize_t inner_len;
    if (envelope[0] == 0x01) {
        if (size < SEAL_HEADER + TAG) Py_RETURN_NONE;
        PyObject *id = PyLong_FromLong((long)envelope[1] << 8 | envelope[2]);
        if (!id) return NULL;
        PyObject *key = PyDict_GetItemWithError(seal_keys, id);
        Py_DECREF(id);
        if (!key) { if (PyErr_Occurred()) return NULL; Py_RETURN_NONE; }
        if (!PyBytes_Check(key) || PyBytes_GET_SIZE(key) != 32) Py_RETURN_NONE;
        unsigned char ad[4 + SEAL_HEADER];
        memcpy(ad, "VM1:", 4);
        memcpy(ad + 4, envelope, SEAL_HEADER);
        unsigned long long m_len = 0;
        if (aead_decrypt(opened, &m_len, NULL, envelope + SEAL_HEADER, (unsigned long long)(size - SEAL_HEADER), ad,
                         sizeof ad, envelope + 3, (const unsigned char *)PyBytes_AS_STRING(key)))
            Py_RETURN_NONE; /* altered: the Python path says FORGED with its explanation */
        inner = opened, inner_len = (Py_ssize_t)m_len;
    } else if (envelope[0] == 0x02) {
        inner = envelope + 1, inner_len = size - 1;
    } else {
        Py_RETURN_NONE;
    }
    /* 5-6. Key id, signature, body and the body's form. */
    if (inner_len <= 2 + SIG) Py_RETURN_NONE;
    unsigned key_id = (unsigned)inner[0] << 8 | inner[1];
    const unsigned char *signature = inner + 2, *body = inner + 2 + SIG;
    Py_ssize_t body_len = inner_len - 2 - SIG;
    Body b;
    if (parse_body(body, body + body_len, &b) || !body_in_form(&b)) Py_RETURN_NONE;
    PyObject *plate = PyUnicode_DecodeUTF8((const char *)b.plate, b.plate_len, "strict");
    if (!plate) { PyErr_Clear(); Py_RETURN_NONE; }
    PyObject *vin = PyUnicode_DecodeUTF8((const char *)(b.vin_len ? b.vin : (const unsigned char *)""), b.vin_len, "strict");
    if (!vin) { PyErr_Clear(); Py_DECREF(plate); Py_RETURN_NONE; }
    PyObject *result = NULL, *signed_triple = NULL, *fallback = Py_None, *entry = NULL;
    Row row = {0, 0, 0};
    /* 7. A known key: (public key, revoked, last issued_at it may sign, or None). */
    PyObject *id = PyLong_FromUnsignedLong(key_id);
    if (!id) goto done;
    entry = PyDict_GetItemWithError(keys, id);
    Py_DECREF(id);
    if (!entry) { if (!PyErr_Occurred()) result = Py_NewRef(Py_None); goto done; }
    Py_INCREF(entry); /* held across the GIL's release below */
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 3) { result = Py_NewRef(Py_None); goto done; }
    PyObject *public_key = PyTuple_GET_ITEM(entry, 0), *last_signing = PyTuple_GET_ITEM(entry, 2);
    if (!PyBytes_Check(public_key) || PyBytes_GET_SIZE(public_key) != 32) { result = Py_NewRef(Py_None); goto done; }
    /* sm = signature || message, as crypto_sign_open takes it; message = domain || key id || body. */
    unsigned char sm[SIG + DOMAIN_SIZE + 2 + MAX_ENVELOPE], *message = sm + SIG;
    Py_ssize_t message_len = DOMAIN_SIZE + 2 + body_len;
    memcpy(sm, signature, SIG);
    memcpy(message, DOMAIN, DOMAIN_SIZE);
    message[DOMAIN_SIZE] = (unsigned char)(key_id >> 8), message[DOMAIN_SIZE + 1] = (unsigned char)key_id;
    memcpy(message + DOMAIN_SIZE + 2, body, (size_t)body_len);
    if (check_signature) {
        /* 8. The signature, with the GIL released. */
        unsigned char m_out[sizeof sm];
        unsigned long long m_len = 0;
        unsigned char pk[32];
        memcpy(pk, PyBytes_AS_STRING(public_key), 32);
        int bad;
        Py_BEGIN_ALLOW_THREADS
        bad = sign_open(m_out, &m_len, sm, (unsigned long long)(SIG + message_len), pk);
        Py_END_ALLOW_THREADS
        if (bad) { result = Py_NewRef(FORGED_SIGNATURE); goto done; }
        fallback = AUTHENTIC; /* from here the Python path need not check the signature again */
    } else {
        signed_triple = Py_BuildValue("(Oy#y#)", public_key, signature, (Py_ssize_t)SIG, message, message_len);
        if (!signed_triple) goto done;
    }
    /* 9. The key's life: revoked, or a mark stamped after it stopped signing -> the Python path. */
    if (PyTuple_GET_ITEM(entry, 1) != Py_False) { result = Py_NewRef(fallback); goto done; }
    if (last_signing != Py_None) {
        double last = PyFloat_AsDouble(last_signing);
        if (last == -1.0 && PyErr_Occurred()) goto done;
        if ((double)b.issued_at > last) { result = Py_NewRef(fallback); goto done; }
    }
    /* 12, 14 (the mark's own dates) before the index: a live QR within its minutes, attested and in validity. */
    if (b.presentation == (uint64_t)presentation_online && now > (double)b.expires_at) { result = Py_NewRef(fallback); goto done; }
    long long valid_from = b.valid_from_day ? (long long)b.valid_from_day
                                            : (b.issued_at + 8 * 3600 - ((b.issued_at + 8 * 3600) % 86400 + 86400) % 86400) / 86400;
    if (on_day < valid_from || on_month > (long long)b.valid_until) { result = Py_NewRef(fallback); goto done; }
    /* 10, 11, 13. The vehicle holding the plate now, not blocked, this mark current and not revoked,
       and its recorded validity covering the day (VehicleStanding's common case). */
    uint64_t plate_key = vm_fold(PLATE_SEED ^ b.plate_type, b.plate, b.plate_len, 16);
    uint64_t vin_key = vm_fold(VIN_SEED, b.vin, b.vin_len, 24);
    int found = vm_probe_index(index, plate_key, vin_key, b.serial, &row);
    if (found < 0) goto done;
    if (!found || (row.status & blocks_road_mask) || row.serial != b.serial || !row.valid_until ||
        on_month > (long long)row.valid_until) {
        result = Py_NewRef(fallback);
        goto done;
    }
    /* VALID: (serial, plate number, plate type, vin, valid_until month, presentation, issued_at,
       reason, key id, status bits, recorded valid_until, signed triple or None) */
    result = Py_BuildValue("(KOkOkkLkIIIO)", (unsigned long long)b.serial, plate, (unsigned long)b.plate_type, vin,
                           (unsigned long)b.valid_until, (unsigned long)b.presentation, (long long)b.issued_at,
                           (unsigned long)b.reason, key_id, row.status, row.valid_until,
                           signed_triple ? signed_triple : Py_None);
done:
    Py_XDECREF(entry);
    Py_XDECREF(signed_triple);
    Py_DECREF(plate);
    Py_DECREF(vin);
    return result;
}

/* configure(sign_open_address, aead_decrypt_address, plate_types, reasons, presentations,
 *           (first_month, last_month, last_day, first_instant, last_instant), blocks_road_mask, online) */
static PyObject *configure(PyObject *self, PyObject *args) {
    unsigned long long sign_address, aead_address, types_low, types_high, reason_mask, presentation_mask;
    unsigned long blocks;
    int online;
    if (!PyArg_ParseTuple(args, "KKKKKK(LLLLL)ki", &sign_address, &aead_address, &types_low, &types_high,
                          &reason_mask, &presentation_mask, &first_month, &last_month, &last_day, &first_instant,
                          &last_instant, &blocks, &online))
        return NULL;
    sign_open = (sign_open_fn)(uintptr_t)sign_address;
    aead_decrypt = (aead_decrypt_fn)(uintptr_t)aead_address;
    plate_types[0] = types_low, plate_types[1] = types_high;
    reasons = reason_mask, presentations = presentation_mask;
    blocks_road_mask = blocks, presentation_online = online;
    Py_RETURN_NONE;
}

/* check_signatures([(public key, signature, message), ...]) -> [bool, ...]: libsodium's Ed25519
   verify of each, the GIL released once for them all (the signature engine's workers, VerifyBatch). */
static PyObject *check_signatures(PyObject *self, PyObject *items) {
    PyObject *seq = PySequence_Fast(items, "check_signatures takes a sequence of (public key, signature, message)");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **triples = PySequence_Fast_ITEMS(seq);
    /* Each triple's bytes, copied under the GIL: sig || message (what crypto_sign_open takes), the key. */
    size_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = triples[i];
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 3 || !PyBytes_Check(PyTuple_GET_ITEM(t, 0)) ||
            !PyBytes_Check(PyTuple_GET_ITEM(t, 1)) || !PyBytes_Check(PyTuple_GET_ITEM(t, 2))) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_TypeError, "check_signatures takes (bytes, bytes, bytes) triples");
            return NULL;
        }
        total += (size_t)(32 + PyBytes_GET_SIZE(PyTuple_GET_ITEM(t, 1)) + PyBytes_GET_SIZE(PyTuple_GET_ITEM(t, 2)));
    }
    unsigned char *buffer = PyMem_RawMalloc(total + 1), *out = PyMem_RawMalloc(total + 1);
    size_t *offsets = PyMem_RawMalloc(sizeof(size_t) * (size_t)(2 * n + 1));
    char *answers = PyMem_RawMalloc((size_t)n + 1);
    if (!buffer || !out || !offsets || !answers) {
        PyMem_RawFree(buffer); PyMem_RawFree(out); PyMem_RawFree(offsets); PyMem_RawFree(answers);
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    size_t at = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pk = PyTuple_GET_ITEM(triples[i], 0), *sig = PyTuple_GET_ITEM(triples[i], 1),
                 *msg = PyTuple_GET_ITEM(triples[i], 2);
        offsets[2 * i] = at;
        answers[i] = PyBytes_GET_SIZE(pk) == 32 && PyBytes_GET_SIZE(sig) == SIG;
        memcpy(buffer + at, PyBytes_AS_STRING(pk), (size_t)PyBytes_GET_SIZE(pk));
        at += (size_t)PyBytes_GET_SIZE(pk);
        offsets[2 * i + 1] = at;
        memcpy(buffer + at, PyBytes_AS_STRING(sig), (size_t)PyBytes_GET_SIZE(sig));
        at += (size_t)PyBytes_GET_SIZE(sig);
        memcpy(buffer + at, PyBytes_AS_STRING(msg), (size_t)PyBytes_GET_SIZE(msg));
        at += (size_t)PyBytes_GET_SIZE(msg);
    }
    offsets[2 * n] = at;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!answers[i]) continue; /* not an Ed25519 key and signature: not authentic */
        const unsigned char *sm = buffer + offsets[2 * i + 1];
        size_t sm_len = offsets[2 * i + 2] - offsets[2 * i + 1];
        unsigned long long m_len = 0;
        answers[i] = sign_open(out, &m_len, sm, sm_len, buffer + offsets[2 * i]) == 0;
    }
    Py_END_ALLOW_THREADS
    PyObject *result = PyList_New(n);
    for (Py_ssize_t i = 0; result && i < n; i++) PyList_SET_ITEM(result, i, PyBool_FromLong(answers[i]));
    PyMem_RawFree(buffer); PyMem_RawFree(out); PyMem_RawFree(offsets); PyMem_RawFree(answers);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef methods[] = {
    {"verify", (PyCFunction)(void (*)(void))verify, METH_FASTCALL, "One mark: its VALID fields, FORGED_SIGNATURE or None."},
    {"configure", configure, METH_VARARGS, "The libsodium entry points and the rules' constants."},
    {"check_signatures", check_signatures, METH_O, "Ed25519 verify of each (public key, signature, message)."},
    {"key_hashes", vm_key_hashes, METH_VARARGS, "(plate_hash, vin_hash) as index_keys computes them."},
    {"plate_hits", vm_plate_hits, METH_VARARGS, "ValidityIndex._hits of a plate: its candidate ids, or None."},
    {"vin_hits", vm_vin_hits, METH_VARARGS, "ValidityIndex._hits of a VIN: its candidate ids, or None."},
    {"read_at", vm_read_at, METH_VARARGS, "os.pread(fd, n, offset), the GIL kept when the page cache has it all."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_hotpath", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__hotpath(void) {
    init_b45();
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (vm_index_names()) return NULL;
    FORGED_SIGNATURE = PyUnicode_InternFromString("FORGED_SIGNATURE");
    AUTHENTIC = PyUnicode_InternFromString("AUTHENTIC");
    if (!FORGED_SIGNATURE || PyModule_AddObjectRef(m, "FORGED_SIGNATURE", FORGED_SIGNATURE)) return NULL;
    if (!AUTHENTIC || PyModule_AddObjectRef(m, "AUTHENTIC", AUTHENTIC)) return NULL;
    return m;
}
