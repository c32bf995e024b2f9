/* The conversion walk of indexer/convert.py (``_fast``), in C, for its common values.

Why: converting item images is most of the handler's CPU on a cold batch (docs/benchmarks.md,
issue 16): the pure-Python walk spends ~17 us per 29-value image on bytecode, not on work.

What it must keep: ``walk(value, slow)`` returns exactly what ``convert._fast(value)`` returns,
or raises what it raises. It takes S, N (integers of at most 18 digits, plain decimals whose
double is exact), M, L, BOOL, NULL and SS itself; for every other value (B, NS, BS, a longer
or odder number, anything malformed) it calls ``slow(value)`` -- convert._fast itself -- so
there is one definition of every rule and the C code only has shortcuts that give the same
answer. tests/test_convert_native.py compares the two on generated values.

Built against the stable ABI (Py_LIMITED_API, 3.11): one ``.abi3.so`` serves CPython 3.11 and
later, so the Lambda package (python3.12) can carry the one built here. Optional: when it is
not built, indexer.convert runs the Python walk. */

#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030B0000
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* Deepest nesting walked: DynamoDB allows 32 levels; orjson writes at most 254. */
#define MAX_DEPTH 128
/* Longest integer text taken here: 18 digits always fit Elasticsearch's long (and C's). */
#define SHORT_INTEGER_DIGITS 18
/* Plain decimals of at most 16 characters: their double's shortest text is the same decimal. */
#define SHORT_DECIMAL_LENGTH 16
/* Longer plain decimals are taken when the double's repr is the text; never longer than this. */
#define LONGEST_DECIMAL 40

static PyObject *walk_value(PyObject *value, PyObject *slow, int depth);

static PyObject *delegate(PyObject *value, PyObject *slow) {
    return PyObject_CallFunctionObjArgs(slow, value, NULL);
}

/* The ASCII text of a str, or NULL (no error set) when it is not pure ASCII or too long. */
static const char *ascii_text(PyObject *text, Py_ssize_t longest, Py_ssize_t *size) {
    Py_ssize_t length = PyUnicode_GetLength(text);
    if (length < 0) {
        PyErr_Clear();
        return NULL;
    }
    if (length > longest) return NULL;
    const char *data = PyUnicode_AsUTF8AndSize(text, size);
    if (data == NULL) { /* e.g. a lone surrogate: the Python walk decides */
        PyErr_Clear();
        return NULL;
    }
    return *size == length ? data : NULL;
}

static int all_digits(const char *text, Py_ssize_t size) {
    if (size == 0) return 0;
    for (Py_ssize_t i = 0; i < size; i++) {
        if (text[i] < '0' || text[i] > '9') return 0;
    }
    return 1;
}

/* Whether text is -?[0-9]+\.[0-9]+ (convert._PLAIN_DECIMAL). */
static int plain_decimal(const char *text, Py_ssize_t size) {
    Py_ssize_t i = text[0] == '-' ? 1 : 0;
    Py_ssize_t before = 0, after = 0;
    while (i < size && text[i] >= '0' && text[i] <= '9') { i++; before++; }
    if (i >= size || text[i] != '.') return 0;
    i++;
    while (i < size && text[i] >= '0' && text[i] <= '9') { i++; after++; }
    return i == size && before > 0 && after > 0;
}

/* int(value) when the double is whole (it is below 1e16 here), else the double. */
static PyObject *float_or_int(double value) {
    if (value == (double)(long long)value) return PyLong_FromLongLong((long long)value);
    return PyFloat_FromDouble(value);
}

/* An N's value, or NULL with no error set when the Python walk must decide. */
static PyObject *number(PyObject *text) {
    Py_ssize_t size;
    const char *data = ascii_text(text, LONGEST_DECIMAL, &size);
    if (data == NULL || size == 0) return NULL;
    const char *digits = data[0] == '-' ? data + 1 : data;
    Py_ssize_t count = size - (digits - data);
    if (count <= SHORT_INTEGER_DIGITS && all_digits(digits, count)) {
        long long whole = 0;
        for (Py_ssize_t i = 0; i < count; i++) whole = whole * 10 + (digits[i] - '0');
        return PyLong_FromLongLong(digits == data ? whole : -whole);
    }
    if (!plain_decimal(data, size)) return NULL;
    char *end = NULL;
    double value = PyOS_string_to_double(data, &end, NULL);
    if (value == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return NULL;
    }
    if (end != data + size) return NULL;
    if (size <= SHORT_DECIMAL_LENGTH) return float_or_int(value);
    /* Exact when the text is the double's own shortest text (repr), as convert._fast_number. */
    char *shortest = PyOS_double_to_string(value, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (shortest == NULL) {
        PyErr_Clear();
        return NULL;
    }
    int same = strcmp(shortest, data) == 0;
    PyMem_Free(shortest);
    return same ? float_or_int(value) : NULL;
}

static const char ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int sextet(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* The bytes of standard, padded base64 text (what binascii.a2b_base64 in strict mode takes),
   or NULL with no error set for any other text (the Python walk decides). */
static PyObject *base64_bytes(PyObject *text) {
    Py_ssize_t size;
    const char *data = ascii_text(text, PY_SSIZE_T_MAX, &size);
    if (data == NULL || size % 4 != 0) return NULL;
    Py_ssize_t padding = 0;
    if (size > 0 && data[size - 1] == '=') padding = data[size - 2] == '=' ? 2 : 1;
    PyObject *result = PyBytes_FromStringAndSize(NULL, size / 4 * 3 - padding);
    if (result == NULL) return NULL;
    unsigned char *out = (unsigned char *)PyBytes_AsString(result);
    for (Py_ssize_t i = 0, o = 0; i < size; i += 4) {
        int last = i + 4 == size;
        int a = sextet(data[i]), b = sextet(data[i + 1]);
        int c = last && padding == 2 ? 0 : sextet(data[i + 2]);
        int d = last && padding >= 1 ? 0 : sextet(data[i + 3]);
        if ((a | b | c | d) < 0) {
            Py_DECREF(result);
            return NULL;
        }
        unsigned long group = (unsigned long)a << 18 | (unsigned long)b << 12 | (unsigned long)c << 6 | (unsigned long)d;
        out[o++] = (unsigned char)(group >> 16);
        if (!(last && padding == 2)) out[o++] = (unsigned char)(group >> 8);
        if (!(last && padding >= 1)) out[o++] = (unsigned char)group;
    }
    return result;
}

/* Canonical base64 text of bytes (binascii.b2a_base64 without the newline). */
static PyObject *base64_text(PyObject *raw) {
    const unsigned char *in = (const unsigned char *)PyBytes_AsString(raw);
    Py_ssize_t size = PyBytes_Size(raw);
    if (in == NULL || size < 0) return NULL;
    Py_ssize_t length = (size + 2) / 3 * 4;
    char small[256];
    char *out = length <= (Py_ssize_t)sizeof small ? small : PyMem_Malloc((size_t)length);
    if (out == NULL) return PyErr_NoMemory();
    for (Py_ssize_t i = 0, o = 0; i < size; i += 3) {
        unsigned long group = (unsigned long)in[i] << 16;
        if (i + 1 < size) group |= (unsigned long)in[i + 1] << 8;
        if (i + 2 < size) group |= in[i + 2];
        out[o++] = ALPHABET[group >> 18 & 63];
        out[o++] = ALPHABET[group >> 12 & 63];
        out[o++] = i + 1 < size ? ALPHABET[group >> 6 & 63] : '=';
        out[o++] = i + 2 < size ? ALPHABET[group & 63] : '=';
    }
    PyObject *result = PyUnicode_FromStringAndSize(out, length);
    if (out != small) PyMem_Free(out);
    return result;
}

/* A B's canonical text, or NULL with no error set when the Python walk must decide. */
static PyObject *binary(PyObject *text) {
    if (!PyUnicode_CheckExact(text)) return NULL;
    PyObject *raw = base64_bytes(text);
    if (raw == NULL) return NULL;
    PyObject *result = base64_text(raw);
    Py_DECREF(raw);
    return result;
}

/* Each element of a list converted by one, then sorted; NULL with no error set when one
   element must go to the Python walk. */
static PyObject *sorted_set(PyObject *inner, PyObject *(*one)(PyObject *)) {
    Py_ssize_t size = PyList_Size(inner);
    PyObject *result = PyList_New(size);
    if (result == NULL) return NULL;
    for (Py_ssize_t i = 0; i < size; i++) {
        PyObject *element = PyList_GetItem(inner, i);
        PyObject *converted = element != NULL && PyUnicode_CheckExact(element) ? one(element) : NULL;
        if (converted == NULL) {
            Py_DECREF(result);
            return NULL;
        }
        PyList_SetItem(result, i, converted); /* steals */
    }
    if (PyList_Sort(result) < 0) Py_CLEAR(result);
    return result;
}

/* A BS: the raw bytes sorted (as the Python walk sorts them), then written as base64. */
static PyObject *binary_set(PyObject *inner) {
    PyObject *raw = sorted_set(inner, base64_bytes);
    if (raw == NULL) return NULL;
    Py_ssize_t size = PyList_Size(raw);
    for (Py_ssize_t i = 0; i < size; i++) {
        PyObject *text = base64_text(PyList_GetItem(raw, i));
        if (text == NULL) {
            Py_DECREF(raw);
            return NULL;
        }
        PyList_SetItem(raw, i, text); /* steals; drops the bytes */
    }
    return raw;
}

static PyObject *walk_map(PyObject *inner, PyObject *slow, int depth) {
    PyObject *result = PyDict_New();
    if (result == NULL) return NULL;
    Py_ssize_t position = 0;
    PyObject *name, *item;
    while (PyDict_Next(inner, &position, &name, &item)) {
        PyObject *converted = walk_value(item, slow, depth);
        if (converted == NULL || PyDict_SetItem(result, name, converted) < 0) {
            Py_XDECREF(converted);
            Py_DECREF(result);
            return NULL;
        }
        Py_DECREF(converted);
    }
    return result;
}

static PyObject *walk_list(PyObject *inner, PyObject *slow, int depth) {
    Py_ssize_t size = PyList_Size(inner);
    PyObject *result = PyList_New(size);
    if (result == NULL) return NULL;
    for (Py_ssize_t i = 0; i < size; i++) {
        PyObject *item = PyList_GetItem(inner, i); /* borrowed; the list cannot change here */
        PyObject *converted = item == NULL ? NULL : walk_value(item, slow, depth);
        if (converted == NULL) {
            Py_DECREF(result);
            return NULL;
        }
        PyList_SetItem(result, i, converted); /* steals */
    }
    return result;
}

static PyObject *string_set(PyObject *inner) {
    Py_ssize_t size = PyList_Size(inner);
    for (Py_ssize_t i = 0; i < size; i++) {
        if (!PyUnicode_CheckExact(PyList_GetItem(inner, i))) return NULL;
    }
    PyObject *result = PyList_GetSlice(inner, 0, size);
    if (result != NULL && PyList_Sort(result) < 0) Py_CLEAR(result);
    return result;
}

/* Whether the tag (an AttributeValue's one key) is the ASCII text name. */
static int tag_is(const char *tag, Py_ssize_t size, const char *name) {
    return (size_t)size == strlen(name) && memcmp(tag, name, (size_t)size) == 0;
}

static PyObject *walk_tagged(PyObject *value, PyObject *slow, int depth) {
    Py_ssize_t position = 0;
    PyObject *tag_object, *inner;
    if (!PyDict_Next(value, &position, &tag_object, &inner) || !PyUnicode_CheckExact(tag_object)) {
        return delegate(value, slow);
    }
    Py_ssize_t size;
    const char *tag = ascii_text(tag_object, 4, &size);
    if (tag == NULL) return delegate(value, slow);
    if (tag_is(tag, size, "S")) {
        if (PyUnicode_CheckExact(inner)) return Py_NewRef(inner);
    } else if (tag_is(tag, size, "N")) {
        if (PyUnicode_CheckExact(inner)) {
            PyObject *converted = number(inner);
            if (converted != NULL || PyErr_Occurred()) return converted;
        }
    } else if (tag_is(tag, size, "M")) {
        if (PyDict_CheckExact(inner)) return walk_map(inner, slow, depth);
    } else if (tag_is(tag, size, "L")) {
        if (PyList_CheckExact(inner)) return walk_list(inner, slow, depth);
    } else if (tag_is(tag, size, "BOOL")) {
        if (inner == Py_True || inner == Py_False) return Py_NewRef(inner);
    } else if (tag_is(tag, size, "NULL")) {
        if (inner == Py_True) return Py_NewRef(Py_None);
    } else if (tag_is(tag, size, "SS")) {
        if (PyList_CheckExact(inner)) {
            PyObject *sorted = string_set(inner);
            if (sorted != NULL || PyErr_Occurred()) return sorted;
        }
    } else if (tag_is(tag, size, "B")) {
        PyObject *converted = binary(inner);
        if (converted != NULL || PyErr_Occurred()) return converted;
    } else if (tag_is(tag, size, "NS")) {
        if (PyList_CheckExact(inner)) {
            PyObject *sorted = sorted_set(inner, number);
            if (sorted != NULL || PyErr_Occurred()) return sorted;
        }
    } else if (tag_is(tag, size, "BS")) {
        if (PyList_CheckExact(inner)) {
            PyObject *sorted = binary_set(inner);
            if (sorted != NULL || PyErr_Occurred()) return sorted;
        }
    }
    return delegate(value, slow);
}

static PyObject *walk_value(PyObject *value, PyObject *slow, int depth) {
    if (!PyDict_CheckExact(value) || PyDict_Size(value) != 1) return delegate(value, slow);
    /* DynamoDB nests 32 levels; a forged record more. Deeper than MAX_DEPTH: RecursionError,
       which convert.item reports as it reports the Python walk's. */
    if (depth >= MAX_DEPTH) {
        PyErr_SetString(PyExc_RecursionError, "an item image nested deeper than the walk goes");
        return NULL;
    }
    return walk_tagged(value, slow, depth + 1);
}

static PyObject *py_item(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *image, *slow;
    if (!PyArg_ParseTuple(args, "O!O:item", &PyDict_Type, &image, &slow)) return NULL;
    return walk_map(image, slow, 0);
}

static PyObject *py_walk(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *value, *slow;
    if (!PyArg_ParseTuple(args, "OO:walk", &value, &slow)) return NULL;
    return walk_value(value, slow, 0);
}

/* Whether no map key at any depth holds a dot (0: one does, or the walk cannot tell). */
static int undotted(PyObject *value, int depth) {
    if (depth >= MAX_DEPTH) return 0;
    if (PyDict_CheckExact(value)) {
        Py_ssize_t position = 0;
        PyObject *name, *item;
        while (PyDict_Next(value, &position, &name, &item)) {
            if (!PyUnicode_CheckExact(name)) return 0;
            Py_ssize_t found = PyUnicode_FindChar(name, '.', 0, PY_SSIZE_T_MAX, 1);
            if (found != -1) { /* a dot, or -2: an error */
                if (found == -2) PyErr_Clear();
                return 0;
            }
            if ((PyDict_CheckExact(item) || PyList_CheckExact(item)) && !undotted(item, depth + 1)) return 0;
        }
        return 1;
    }
    Py_ssize_t size = PyList_Size(value);
    for (Py_ssize_t i = 0; i < size; i++) {
        PyObject *item = PyList_GetItem(value, i);
        if ((PyDict_CheckExact(item) || PyList_CheckExact(item)) && !undotted(item, depth + 1)) return 0;
    }
    return 1;
}

static PyObject *py_ordinary_names(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *document, *reserved;
    if (!PyArg_ParseTuple(args, "O!U:ordinary_names", &PyDict_Type, &document, &reserved)) return NULL;
    Py_ssize_t position = 0;
    PyObject *name, *item;
    while (PyDict_Next(document, &position, &name, &item)) {
        if (!PyUnicode_CheckExact(name)) Py_RETURN_FALSE;
        Py_ssize_t starts = PyUnicode_Tailmatch(name, reserved, 0, PY_SSIZE_T_MAX, -1);
        if (starts != 0) {
            if (starts < 0) PyErr_Clear();
            Py_RETURN_FALSE;
        }
    }
    if (undotted(document, 0)) Py_RETURN_TRUE;
    Py_RETURN_FALSE;
}

/* --- records.head_of's common record -------------------------------------------------------- */

/* Longest SequenceNumber (records.SEQUENCE_WIDTH) and document id (ids.MAX_ID_BYTES). */
#define SEQUENCE_WIDTH 40
#define MAX_ID_BYTES 512
/* records.MAX_EPOCH_SECONDS: a creation time beyond it is forged. */
#define MAX_EPOCH_SECONDS 1e11

/* The record's key names, interned once (module init). */
static PyObject *EVENT_SOURCE, *EVENT_NAME, *DYNAMODB, *SEQUENCE_NUMBER, *KEYS, *NEW_IMAGE, *CREATED, *S_TAG;

/* The item (borrowed) under key, or NULL: absent (no error set) or an error (set). */
static PyObject *item_of(PyObject *dict, PyObject *key) {
    return PyDict_GetItemWithError(dict, key);
}

static int text_equals(PyObject *text, const char *expected) {
    if (!PyUnicode_CheckExact(text)) return 0;
    Py_ssize_t size;
    const char *data = ascii_text(text, 16, &size);
    return data != NULL && (size_t)size == strlen(expected) && memcmp(data, expected, (size_t)size) == 0;
}

/* The id of a one-string key with nothing to escape (ids.document_id's first branch), or NULL. */
static PyObject *plain_id(PyObject *keys) {
    if (!PyDict_CheckExact(keys) || PyDict_Size(keys) != 1) return NULL;
    Py_ssize_t position = 0;
    PyObject *name, *value;
    PyDict_Next(keys, &position, &name, &value);
    if (!PyDict_CheckExact(value) || PyDict_Size(value) != 1) return NULL;
    PyObject *text = item_of(value, S_TAG);
    if (text == NULL || !PyUnicode_CheckExact(text)) return NULL;
    Py_ssize_t size;
    const char *data = ascii_text(text, MAX_ID_BYTES, &size);
    if (data == NULL || size == 0) return NULL;
    for (Py_ssize_t i = 0; i < size; i++) {
        if (data[i] == '\\' || data[i] == '|' || data[i] == '#') return NULL;
    }
    return Py_NewRef(text);
}

/* records._time_ms: the creation time in ms, Py_None when absent or not a time; NULL on error. */
static PyObject *time_ms(PyObject *stream) {
    PyObject *seconds = item_of(stream, CREATED);
    if (seconds == NULL && PyErr_Occurred()) return NULL;
    if (seconds != NULL && PyFloat_CheckExact(seconds)) {
        double value = PyFloat_AsDouble(seconds);
        if (value >= 0 && value < MAX_EPOCH_SECONDS) return PyLong_FromDouble(value * 1000);
    } else if (seconds != NULL && PyLong_CheckExact(seconds)) {
        int overflow = 0;
        long long value = PyLong_AsLongLongAndOverflow(seconds, &overflow);
        if (value == -1 && PyErr_Occurred()) return NULL;
        if (!overflow && value >= 0 && value < (long long)MAX_EPOCH_SECONDS) return PyLong_FromLongLong(value * 1000);
    }
    return Py_NewRef(Py_None);
}

/* head(record) -> (doc_id, sequence, delete, image, at, fresh) for a well-formed record whose
   key is one plain string, or None: records.head_of then reads the record itself (and refuses
   it, or takes the longer way to the same head). */
static PyObject *py_head(PyObject *Py_UNUSED(module), PyObject *record) {
    if (!PyDict_CheckExact(record)) Py_RETURN_NONE;
    PyObject *source = item_of(record, EVENT_SOURCE);
    PyObject *event = item_of(record, EVENT_NAME);
    PyObject *stream = item_of(record, DYNAMODB);
    if (PyErr_Occurred()) return NULL;
    if (source != NULL && !text_equals(source, "aws:dynamodb")) Py_RETURN_NONE;
    if (event == NULL || stream == NULL || !PyDict_CheckExact(stream)) Py_RETURN_NONE;
    int remove = text_equals(event, "REMOVE"), insert = text_equals(event, "INSERT");
    if (!remove && !insert && !text_equals(event, "MODIFY")) Py_RETURN_NONE;
    PyObject *sequence_text = item_of(stream, SEQUENCE_NUMBER);
    PyObject *keys = item_of(stream, KEYS);
    PyObject *image = remove ? Py_None : item_of(stream, NEW_IMAGE);
    if (PyErr_Occurred()) return NULL;
    if (sequence_text == NULL || !PyUnicode_CheckExact(sequence_text) || keys == NULL) Py_RETURN_NONE;
    if (image == NULL || (image == Py_None && !remove)) Py_RETURN_NONE;
    Py_ssize_t size;
    const char *digits = ascii_text(sequence_text, SEQUENCE_WIDTH, &size);
    if (digits == NULL || !all_digits(digits, size)) Py_RETURN_NONE;
    PyObject *doc_id = plain_id(keys);
    if (doc_id == NULL) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    PyObject *sequence = PyLong_FromString(digits, NULL, 10);
    PyObject *at = sequence == NULL ? NULL : time_ms(stream);
    PyObject *result = at == NULL ? NULL : Py_BuildValue("(OOOOOO)", doc_id, sequence, remove ? Py_True : Py_False,
                                                         image, at, insert ? Py_True : Py_False);
    Py_DECREF(doc_id);
    Py_XDECREF(sequence);
    Py_XDECREF(at);
    return result;
}

static PyMethodDef methods[] = {
    {"head", py_head, METH_O,
     "head(record) -> (doc_id, sequence, delete, image, at, fresh) of a well-formed record with a\n"
     "plain one-string key, or None when records.head_of must read it itself."},
    {"ordinary_names", py_ordinary_names, METH_VARARGS,
     "ordinary_names(document, reserved) -> True when no top-level name starts with reserved and no\n"
     "name at any depth (maps, also inside lists) holds a dot; False when one does or it cannot tell."},
    {"item", py_item, METH_VARARGS,
     "item(image, slow) -> {name: walk(value, slow)} for a dict of AttributeValues."},
    {"walk", py_walk, METH_VARARGS,
     "walk(value, slow) -> convert._fast(value), calling slow(v) for values not taken here."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "indexer._walk", "The common cases of indexer.convert's walk, in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__walk(void) {
    PyObject **names[] = {&EVENT_SOURCE, &EVENT_NAME, &DYNAMODB, &SEQUENCE_NUMBER, &KEYS, &NEW_IMAGE, &CREATED, &S_TAG};
    const char *texts[] = {"eventSource", "eventName", "dynamodb", "SequenceNumber", "Keys", "NewImage",
                           "ApproximateCreationDateTime", "S"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (*names[i] == NULL && (*names[i] = PyUnicode_InternFromString(texts[i])) == NULL) return NULL;
    }
    return PyModule_Create(&module);
}
