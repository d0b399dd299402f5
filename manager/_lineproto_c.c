/*
 * manager._lineproto_c: the manager's hot loop, checking and formatting the
 * rows of one metric series as InfluxDB line protocol, compiled.
 *
 * Why C: on the ingest bench (scripts/bench/ingest.py) the manager shares a
 * 2-core host with influxd, and every microsecond it spends per point is
 * taken from influxd. In CPython the checks plus one f-string per row cost
 * about 0.8 us per point, a floor no arrangement of the Python got under;
 * this loop does the same work in about 0.15 us.
 *
 * It does only the common case, and says so by returning None: every row an
 * exact list of len(keys) + 1 values, an exact int timestamp inside
 * [lo, hi], then exact finite floats and exact ints fitting int64. Anything
 * else (None, str, bool, NaN, a malformed row, a big int) is left to the
 * Python code (manager/lineproto_rows.py), which has the general rules; the
 * test suite checks both give the same lines (tests/manager/test_lineproto.py)
 * and fuzzes this module's edges (tests/manager/test_lineproto_c.py).
 *
 * Float text is Python's repr. Metric values are mostly short decimals
 * (psutil's 12.5, rates the agent rounds), which are written straight from
 * their digits (write_short_decimal); the rest go through CPython's own
 * float formatting, PyOS_double_to_string, as repr does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <math.h>
#include <string.h>

/* The longest float repr ("-2.2250738585072014e-308") is 24 characters. */
#define FLOAT_MAX 24
#define INT_MAX_CHARS 20 /* "-9223372036854775808" */

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buffer;

static int
reserve(Buffer *b, Py_ssize_t more)
{
    /* Sizes come from the message (a long prefix times many rows): a sum
     * past PY_SSIZE_T_MAX would wrap and pass the test below (within reach of
     * a 32-bit build), so it is refused as the failed allocation it is. */
    if (more > PY_SSIZE_T_MAX - b->len) {
        PyErr_NoMemory();
        return -1;
    }
    if (b->len + more <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap <= PY_SSIZE_T_MAX / 2 ? b->cap * 2 : PY_SSIZE_T_MAX;
    if (cap < b->len + more)
        cap = b->len + more;
    char *data = PyMem_Realloc(b->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

/* Caller has reserved room; returns the number of characters written. */
static Py_ssize_t
write_int(char *out, long long value)
{
    char digits[INT_MAX_CHARS];
    unsigned long long u = value < 0 ? 0ULL - (unsigned long long)value : (unsigned long long)value;
    int n = 0;
    do {
        digits[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    Py_ssize_t w = 0;
    if (value < 0)
        out[w++] = '-';
    while (n)
        out[w++] = digits[--n];
    return w;
}

/* An exact int as long long; 0 with *ok = 0 when it does not fit. */
static long long
as_int64(PyObject *value, int *ok)
{
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    *ok = !overflow && !(v == -1 && PyErr_Occurred());
    PyErr_Clear();
    return v;
}

static const double POW10[] = {1.0, 10.0, 100.0, 1000.0, 10000.0};
#define MAX_DECIMALS 4
/* 2**52: below it a double's spacing is finer than one unit of n. */
#define EXACT_LIMIT 4503599627370496.0

/*
 * Write repr(v) for a finite v that is n / 10**k for an integer n and k <= 4
 * (metric values: percentages, rates rounded by the agent, whole numbers),
 * without dtoa. Returns the characters written, or 0 when v is not such a
 * value.
 *
 * Why this is repr: with |n| < 2**52 the doubles near v are spaced finer than
 * 10**-k, so "int.frac" with k decimals is the only k-decimal string that
 * parses to v, and no string with fewer decimals does; repr picks the
 * shortest string that parses back to v, which is therefore this one. repr
 * switches to exponents below 1e-4 and from 1e16, outside what this takes.
 *
 * Why the loop finds that n: while |n| < 2**51, v * 10**k is n within 1/4
 * and its rounding adds at most 1/8, so nearbyint gives n. In the top
 * binade [2**51, 2**52) it can miss by one; the check below then fails and
 * the next k is past EXACT_LIMIT, so such a value goes to dtoa, never to a
 * longer string (checked by brute force over every magnitude and k).
 */
static Py_ssize_t
write_short_decimal(char *out, double v)
{
    for (int k = 0; k <= MAX_DECIMALS; k++) {
        double scaled = nearbyint(v * POW10[k]);
        if (fabs(scaled) >= EXACT_LIMIT)
            return 0;
        if (scaled / POW10[k] != v)
            continue;
        long long n = (long long)scaled;
        unsigned long long u = n < 0 ? 0ULL - (unsigned long long)n : (unsigned long long)n;
        unsigned long long scale = (unsigned long long)POW10[k];
        Py_ssize_t w = 0;
        if (v < 0)
            out[w++] = '-';
        w += write_int(out + w, (long long)(u / scale));
        out[w++] = '.';
        if (k == 0) {
            out[w++] = '0';
            return w;
        }
        unsigned long long frac = u % scale;
        for (int d = k - 1; d >= 0; d--) {
            out[w + d] = (char)('0' + frac % 10);
            frac /= 10;
        }
        return w + k;
    }
    return 0;
}

/* Append repr of a finite float; -1 on an error (memory). */
static int
write_float(Buffer *b, double v)
{
    if (v == 0.0) { /* both zeros, by their sign */
        const char *zero = signbit(v) ? "-0.0" : "0.0";
        Py_ssize_t n = (Py_ssize_t)strlen(zero);
        memcpy(b->data + b->len, zero, (size_t)n);
        b->len += n;
        return 0;
    }
    Py_ssize_t n = write_short_decimal(b->data + b->len, v);
    if (n) {
        b->len += n;
        return 0;
    }
    char *repr = PyOS_double_to_string(v, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (repr == NULL)
        return -1;
    n = (Py_ssize_t)strlen(repr);
    if (n > FLOAT_MAX) { /* cannot happen for a finite double; be safe anyway */
        PyMem_Free(repr);
        PyErr_SetString(PyExc_SystemError, "float repr longer than expected");
        return -1;
    }
    memcpy(b->data + b->len, repr, (size_t)n);
    b->len += n;
    PyMem_Free(repr);
    return 0;
}

/* encode_rows(prefix, keys, rows, lo, hi) -> str | None */
static PyObject *
encode_rows(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "encode_rows(prefix, keys, rows, lo, hi)");
        return NULL;
    }
    PyObject *prefix = args[0], *keys = args[1], *rows = args[2];
    if (!PyUnicode_Check(prefix) || !PyList_CheckExact(keys) || !PyList_CheckExact(rows)) {
        PyErr_SetString(PyExc_TypeError, "encode_rows: prefix str, keys list, rows list expected");
        return NULL;
    }
    /* One at a time: converting hi may run Python code (__index__), which
     * must not start with lo's error pending (it would be lost, and lo read
     * as -1). A bound beyond int64 is clamped, as a timestamp must fit int64
     * anyway; a window wholly outside int64 holds no timestamp, so it
     * becomes an empty one: the Python path, comparing ints, does the same. */
    int lo_over, hi_over;
    long long lo = PyLong_AsLongLongAndOverflow(args[3], &lo_over);
    if (lo == -1 && PyErr_Occurred())
        return NULL;
    long long hi = PyLong_AsLongLongAndOverflow(args[4], &hi_over);
    if (hi == -1 && PyErr_Occurred())
        return NULL;
    if (lo_over < 0)
        lo = LLONG_MIN;
    if (hi_over > 0)
        hi = LLONG_MAX;
    if (lo_over > 0 || hi_over < 0) {
        lo = LLONG_MAX;
        hi = LLONG_MIN;
    }

    Py_ssize_t prefix_len, nkeys = PyList_GET_SIZE(keys), nrows = PyList_GET_SIZE(rows);
    const char *prefix_utf8 = PyUnicode_AsUTF8AndSize(prefix, &prefix_len);
    if (prefix_utf8 == NULL)
        return NULL;
    int ascii = PyUnicode_IS_ASCII(prefix);
    if (nkeys == 0)
        Py_RETURN_NONE;
    const char **key_utf8 = PyMem_Malloc(sizeof(char *) * (size_t)nkeys);
    Py_ssize_t *key_len = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)nkeys);
    Buffer b = {NULL, 0, 0};
    PyObject *result = NULL;
    if (key_utf8 == NULL || key_len == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* The most a row can take: its fixed text plus the widest value texts. */
    Py_ssize_t row_max = prefix_len + 1 + INT_MAX_CHARS + 1;
    for (Py_ssize_t k = 0; k < nkeys; k++) {
        PyObject *key = PyList_GET_ITEM(keys, k);
        if (!PyUnicode_Check(key)) {
            PyErr_SetString(PyExc_TypeError, "encode_rows: keys must be str");
            goto done;
        }
        key_utf8[k] = PyUnicode_AsUTF8AndSize(key, &key_len[k]);
        if (key_utf8[k] == NULL)
            goto done;
        ascii &= PyUnicode_IS_ASCII(key);
        /* Each term fits (it is the size of a str in memory); the sum is checked. */
        Py_ssize_t more = key_len[k] + 1 + (FLOAT_MAX > INT_MAX_CHARS + 1 ? FLOAT_MAX : INT_MAX_CHARS + 1);
        if (more > PY_SSIZE_T_MAX / 2 - row_max) {
            PyErr_NoMemory();
            goto done;
        }
        row_max += more;
    }
    /* A first guess for up to 64 rows; reserve() below grows it row by row. */
    Py_ssize_t first = nrows < 64 ? nrows : 64;
    if (reserve(&b, row_max <= PY_SSIZE_T_MAX / 64 ? row_max * first : row_max) < 0)
        goto done;

    for (Py_ssize_t r = 0; r < nrows; r++) {
        PyObject *row = PyList_GET_ITEM(rows, r);
        if (!PyList_CheckExact(row) || PyList_GET_SIZE(row) != nkeys + 1)
            goto not_mine;
        PyObject **items = ((PyListObject *)row)->ob_item;
        if (!PyLong_CheckExact(items[0]))
            goto not_mine;
        int ok;
        long long ts = as_int64(items[0], &ok);
        if (!ok || ts < lo || ts > hi)
            goto not_mine;
        if (reserve(&b, row_max + 1) < 0)
            goto done;
        if (r)
            b.data[b.len++] = '\n';
        memcpy(b.data + b.len, prefix_utf8, (size_t)prefix_len);
        b.len += prefix_len;
        for (Py_ssize_t k = 0; k < nkeys; k++) {
            PyObject *value = items[k + 1];
            if (k)
                b.data[b.len++] = ',';
            memcpy(b.data + b.len, key_utf8[k], (size_t)key_len[k]);
            b.len += key_len[k];
            if (PyFloat_CheckExact(value)) {
                double v = PyFloat_AS_DOUBLE(value);
                if (!isfinite(v))
                    goto not_mine;
                if (write_float(&b, v) < 0)
                    goto done;
            } else if (PyLong_CheckExact(value)) {
                long long v = as_int64(value, &ok);
                if (!ok)
                    goto not_mine;
                b.len += write_int(b.data + b.len, v);
                b.data[b.len++] = 'i';
            } else {
                goto not_mine;
            }
        }
        b.data[b.len++] = ' ';
        b.len += write_int(b.data + b.len, ts);
    }
    if (ascii) {
        result = PyUnicode_New(b.len, 127);
        /* No rows (b.data may be NULL): "" is the shared empty str, not ours to write. */
        if (result != NULL && b.len)
            memcpy(PyUnicode_DATA(result), b.data, (size_t)b.len);
    } else {
        result = PyUnicode_DecodeUTF8(b.data, b.len, "strict");
    }
    goto done;

not_mine:
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(b.data);
    PyMem_Free(key_utf8);
    PyMem_Free(key_len);
    return result;
}

static PyMethodDef methods[] = {
    {"encode_rows", (PyCFunction)(void (*)(void))encode_rows, METH_FASTCALL,
     "encode_rows(prefix, keys, rows, lo, hi) -> str | None\n\n"
     "The rows of one series as newline-separated line protocol, or None when a\n"
     "row is not all finite floats and int64 ints led by a timestamp in [lo, hi]."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "manager._lineproto_c",
    "Compiled fast path of manager.lineproto (see the C source's header).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__lineproto_c(void)
{
    return PyModule_Create(&module);
}
