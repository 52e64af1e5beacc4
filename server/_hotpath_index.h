/* What server/_hotpath.c uses of server/_hotpath_index.c: the validity index's compiled reads. */
#ifndef VIMARK_HOTPATH_INDEX_H
#define VIMARK_HOTPATH_INDEX_H

#define ROW_SIZE 34 /* index.ROW, checked by server/hotpath.py before this module is used */
#define PLATE_SEED 0x706C617465000000ull /* index_keys._PLATE_SEED, _VIN_SEED */
#define VIN_SEED 0x76696E0000000000ull

typedef struct {
    uint64_t serial;
    unsigned valid_until, status;
} Row;

/* The names of the index's attributes, interned once at import: 0, or -1 with an error set. */
int vm_index_names(void);
/* index_keys._fold: MurmurHash3's fmix64 folded over the key's zero-padded little-endian words. */
uint64_t vm_fold(uint64_t seed, const unsigned char *key, Py_ssize_t n, Py_ssize_t width);
/* A mark's vehicle under the index's lock, taken without waiting: 1 found (row filled) and the
   serial not revoked, 0 otherwise (the Python path decides), -1 a broken lock (error set). */
int vm_probe_index(PyObject *index, uint64_t plate_key, uint64_t vin_key, uint64_t serial, Row *row);
/* The module's functions plate_hits, vin_hits, key_hashes and read_at. */
PyObject *vm_plate_hits(PyObject *self, PyObject *args);
PyObject *vm_vin_hits(PyObject *self, PyObject *args);
PyObject *vm_key_hashes(PyObject *self, PyObject *args);
PyObject *vm_read_at(PyObject *self, PyObject *args);

#endif
