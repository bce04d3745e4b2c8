/* Upstox market feed V3 frames straight to tick rows: the decoder process's hot path in C.
 *
 * rows(frame, depth_every_ms, depth_due) reads a serialised FeedResponse and returns the ticks of
 * its feeds as tuples in `Tick` field order, exactly what
 * feeds.upstox.normalise.rows_from_response returns for the same frame after the SDK's generated
 * `FeedResponse` parsed it (tests/feeds/test_upstox_fastfeed.py checks that on every kind of feed).
 * It returns None whenever the frame is anything it does not handle exactly as protobuf would
 * (malformed bytes, invalid UTF-8, a repeated map key or entry field, a group), and the caller then
 * takes the protobuf path, which decodes the frame or raises DecodeError. It never raises for the
 * frame's content.
 *
 * Why: creating a upb message object for every submessage (feed, full feed, market feed, LTPC, the
 * depth levels...) and reading fields one attribute at a time was most of the decoder process's
 * CPU, about 0.55 of this machine's 2 cores at 50,000 ticks/s (bench/bench_upstox_feed.py).
 *
 * Wire rules followed: fields in any order; unknown fields and known fields of an unexpected wire
 * type skipped (protobuf keeps them as unknown fields); the last value of a scalar wins; a message
 * field seen twice is merged; a oneof member replaces another member; repeated quotes append.
 * Rows come in the frame's order (protobuf's map iteration order is its own; nothing downstream
 * depends on the order of different instruments within a frame). Fields it does not read are only
 * skipped, not validated: a frame whose feeds are sound but whose, say, marketInfo holds invalid
 * UTF-8 gives rows here where protobuf would reject the whole frame.
 *
 * Proto (upstox_client/feeder/proto/MarketDataFeedV3.proto), the fields read:
 *   FeedResponse { 2: map<string, Feed> feeds; 3: int64 currentTs; }
 *   Feed { oneof { 1: LTPC ltpc; 2: FullFeed fullFeed; 3: FirstLevelWithGreeks firstLevelWithGreeks; } }
 *   FullFeed { oneof { 1: MarketFullFeed marketFF; 2: IndexFullFeed indexFF; } }
 *   MarketFullFeed { 1: LTPC ltpc; 2: MarketLevel marketLevel; 6: int64 vtt; 7: double oi; }
 *   IndexFullFeed { 1: LTPC ltpc; }
 *   FirstLevelWithGreeks { 1: LTPC ltpc; 2: Quote firstDepth; 4: int64 vtt; 5: double oi; }
 *   LTPC { 1: double ltp; 2: int64 ltt; 3: int64 ltq; 4: double cp; }
 *   MarketLevel { 1: repeated Quote bidAskQuote; }
 *   Quote { 1: int64 bidQ; 2: double bidP; 3: int64 askQ; 4: double askP; }
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MAX_LEVELS 64 /* Upstox sends 5 (full) or 30 (full_d30); more makes us fall back */

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} Buf;

typedef struct {
    double bid_p, ask_p;
    int64_t bid_q, ask_q;
} Quote;

typedef struct {
    double ltp, cp;
    int64_t ltt, ltq;
} Ltpc;

typedef struct {
    int kind;           /* Feed oneof: 0 none, 1 ltpc, 2 fullFeed, 3 firstLevelWithGreeks */
    int full_kind;      /* FullFeed oneof: 0 none, 1 marketFF, 2 indexFF */
    Ltpc ltpc;
    int64_t vtt;
    double oi;
    int n_levels;       /* market depth levels, or 1 when greeks' firstDepth is present */
    Quote levels[MAX_LEVELS];
} Feed;

/* 0 ok, -1 malformed */
static int read_varint(Buf *b, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (b->p >= b->end) return -1;
        uint8_t byte = *b->p++;
        if (shift == 63 && byte > 1) return -1;
        v |= (uint64_t)(byte & 0x7F) << shift;
        if (!(byte & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

static int read_double(Buf *b, double *out) {
    if (b->end - b->p < 8) return -1;
    uint64_t bits = 0;
    for (int i = 7; i >= 0; i--) bits = (bits << 8) | b->p[i];
    memcpy(out, &bits, 8);
    b->p += 8;
    return 0;
}

static int read_len(Buf *b, Buf *inner) {
    uint64_t n;
    if (read_varint(b, &n) < 0 || n > (uint64_t)(b->end - b->p)) return -1;
    inner->p = b->p;
    inner->end = b->p + n;
    b->p += n;
    return 0;
}

/* Skip one field's value of wire type `wt`. */
static int skip(Buf *b, int wt) {
    uint64_t v;
    Buf inner;
    switch (wt) {
    case 0: return read_varint(b, &v);
    case 1: if (b->end - b->p < 8) return -1; b->p += 8; return 0;
    case 2: return read_len(b, &inner);
    case 5: if (b->end - b->p < 4) return -1; b->p += 4; return 0;
    default: return -1; /* groups (3, 4) and invalid types: not in this proto; fall back */
    }
}

static int read_tag(Buf *b, uint32_t *field, int *wt) {
    uint64_t tag;
    if (read_varint(b, &tag) < 0) return -1;
    *field = (uint32_t)(tag >> 3);
    *wt = (int)(tag & 7);
    return (*field == 0 || tag > 0xFFFFFFFFu) ? -1 : 0;
}

/* `FIELDS_OF(buf) ... END_FIELDS` loops over the fields of one message: inside, `field` is the
 * field number and `wt` the wire type of the field whose value starts at buf->p. */
#define FIELDS_OF(buf) \
    uint32_t field; \
    int wt; \
    while ((buf)->p < (buf)->end) { \
        if (read_tag((buf), &field, &wt) < 0) return -1;
#define END_FIELDS }

static int parse_quote(Buf *b, Quote *q) {
    uint64_t v;
    FIELDS_OF(b)
        if (field == 1 && wt == 0) { if (read_varint(b, &v) < 0) return -1; q->bid_q = (int64_t)v; }
        else if (field == 2 && wt == 1) { if (read_double(b, &q->bid_p) < 0) return -1; }
        else if (field == 3 && wt == 0) { if (read_varint(b, &v) < 0) return -1; q->ask_q = (int64_t)v; }
        else if (field == 4 && wt == 1) { if (read_double(b, &q->ask_p) < 0) return -1; }
        else if (skip(b, wt) < 0) return -1;
    END_FIELDS
    return 0;
}

static int parse_ltpc(Buf *b, Ltpc *l) {
    uint64_t v;
    FIELDS_OF(b)
        if (field == 1 && wt == 1) { if (read_double(b, &l->ltp) < 0) return -1; }
        else if (field == 2 && wt == 0) { if (read_varint(b, &v) < 0) return -1; l->ltt = (int64_t)v; }
        else if (field == 3 && wt == 0) { if (read_varint(b, &v) < 0) return -1; l->ltq = (int64_t)v; }
        else if (field == 4 && wt == 1) { if (read_double(b, &l->cp) < 0) return -1; }
        else if (skip(b, wt) < 0) return -1;
    END_FIELDS
    return 0;
}

static int parse_market_level(Buf *b, Feed *f) {
    Buf inner;
    FIELDS_OF(b)
        if (field == 1 && wt == 2) {
            if (read_len(b, &inner) < 0 || f->n_levels >= MAX_LEVELS) return -1;
            Quote *q = &f->levels[f->n_levels++];
            memset(q, 0, sizeof *q);
            if (parse_quote(&inner, q) < 0) return -1;
        } else if (skip(b, wt) < 0) return -1;
    END_FIELDS
    return 0;
}

/* MarketFullFeed, IndexFullFeed (market = 0) and FirstLevelWithGreeks (greeks = 1) share a shape:
 * ltpc at 1, then depth at 2 (market level or first depth), volume and oi at 6/7 or 4/5. */
static int parse_body(Buf *b, Feed *f, int market, int greeks) {
    Buf inner;
    uint64_t v;
    uint32_t vtt_field = greeks ? 4 : 6, oi_field = greeks ? 5 : 7;
    FIELDS_OF(b)
        if (field == 1 && wt == 2) {
            if (read_len(b, &inner) < 0 || parse_ltpc(&inner, &f->ltpc) < 0) return -1;
        } else if (field == 2 && wt == 2 && (market || greeks)) {
            if (read_len(b, &inner) < 0) return -1;
            if (market) {
                if (parse_market_level(&inner, f) < 0) return -1;
            } else {
                if (f->n_levels == 0) { memset(&f->levels[0], 0, sizeof(Quote)); f->n_levels = 1; }
                if (parse_quote(&inner, &f->levels[0]) < 0) return -1;
            }
        } else if (field == vtt_field && wt == 0 && (market || greeks)) {
            if (read_varint(b, &v) < 0) return -1;
            f->vtt = (int64_t)v;
        } else if (field == oi_field && wt == 1 && (market || greeks)) {
            if (read_double(b, &f->oi) < 0) return -1;
        } else if (skip(b, wt) < 0) return -1;
    END_FIELDS
    return 0;
}

static void reset_body(Feed *f) {
    memset(&f->ltpc, 0, sizeof f->ltpc);
    f->vtt = 0;
    f->oi = 0.0;
    f->n_levels = 0;
}

static int parse_full(Buf *b, Feed *f) {
    Buf inner;
    FIELDS_OF(b)
        if ((field == 1 || field == 2) && wt == 2) {
            if (read_len(b, &inner) < 0) return -1;
            if (f->full_kind != (int)field) { reset_body(f); f->full_kind = (int)field; }
            if (parse_body(&inner, f, field == 1, 0) < 0) return -1;
        } else if (skip(b, wt) < 0) return -1;
    END_FIELDS
    return 0;
}

static int parse_feed(Buf *b, Feed *f) {
    Buf inner;
    FIELDS_OF(b)
        if (field >= 1 && field <= 3 && wt == 2) {
            if (read_len(b, &inner) < 0) return -1;
            if (f->kind != (int)field) { reset_body(f); f->full_kind = 0; f->kind = (int)field; }
            int rc = field == 1   ? parse_ltpc(&inner, &f->ltpc)
                     : field == 2 ? parse_full(&inner, f)
                                  : parse_body(&inner, f, 0, 1);
            if (rc < 0) return -1;
        } else if (skip(b, wt) < 0) return -1;
    END_FIELDS
    return 0;
}

/* A new tuple of `n` new references (NULL if any is NULL: the others are released). */
static PyObject *tuple_of(int n, PyObject **items) {
    PyObject *t = NULL;
    for (int i = 0; i < n; i++)
        if (items[i] == NULL) goto fail;
    t = PyTuple_New(n);
    if (t == NULL) goto fail;
    for (int i = 0; i < n; i++) PyTuple_SET_ITEM(t, i, items[i]);
    return t;
fail:
    for (int i = 0; i < n; i++) Py_XDECREF(items[i]);
    return NULL;
}

static PyObject *level_tuple(const Quote *q) {
    PyObject *items[4] = {PyFloat_FromDouble(q->bid_p), PyLong_FromLongLong(q->bid_q),
                          PyFloat_FromDouble(q->ask_p), PyLong_FromLongLong(q->ask_q)};
    return tuple_of(4, items);
}

/* The row of one feed, or Py_None (borrowed, not a tick), or NULL with an exception set. */
/* Depth snapshots read `due` (key -> next ms) and write to `pending`, which the caller copies into
 * `due` once the whole frame has decoded: a frame that falls back changes nothing. */
static PyObject *row_of(PyObject *key, Feed *f, int64_t current_ts, long long every_ms, PyObject *due,
                        PyObject *pending) {
    if (f->kind == 0) return Py_None;
    if (f->ltpc.ltp == 0.0) return Py_None; /* proto3 cannot tell an absent price from zero */
    int levels = 0; /* how many depth levels this tick carries */
    if (f->kind == 3) {
        levels = f->n_levels;
    } else if (f->kind == 2 && f->full_kind == 1) {
        levels = f->n_levels;
        if (every_ms > 0 && due != Py_None) { /* depth snapshots: rows_from_response's rule */
            PyObject *at = PyDict_GetItemWithError(due, key);
            if (at == NULL && PyErr_Occurred()) return NULL;
            long long due_ms = at ? PyLong_AsLongLong(at) : 0;
            if (due_ms == -1 && PyErr_Occurred()) return NULL;
            if (current_ts >= due_ms) {
                PyObject *next = PyLong_FromLongLong(current_ts + every_ms);
                if (next == NULL || PyDict_SetItem(pending, key, next) < 0) { Py_XDECREF(next); return NULL; }
                Py_DECREF(next);
            } else if (levels > 1) {
                levels = 1;
            }
        }
    }
    int64_t volume = (f->kind == 1 || (f->kind == 2 && f->full_kind != 1)) ? 0 : f->vtt;
    double oi = (f->kind == 1 || (f->kind == 2 && f->full_kind != 1)) ? 0.0 : f->oi;
    Quote best = {0.0, 0.0, 0, 0};
    if (levels) best = f->levels[0];
    PyObject *depth;
    if (levels > 1) {
        depth = PyTuple_New(levels);
        if (depth == NULL) return NULL;
        for (int i = 0; i < levels; i++) {
            PyObject *level = level_tuple(&f->levels[i]);
            if (level == NULL) { Py_DECREF(depth); return NULL; }
            PyTuple_SET_ITEM(depth, i, level);
        }
    } else {
        depth = PyTuple_New(0);
        if (depth == NULL) return NULL;
    }
    int64_t ts = f->ltpc.ltt ? f->ltpc.ltt : current_ts;
    Py_INCREF(key);
    PyObject *items[12] = {key, PyLong_FromLongLong(ts), PyFloat_FromDouble(f->ltpc.ltp),
                           PyLong_FromLongLong(f->ltpc.ltq), PyLong_FromLongLong(volume),
                           PyFloat_FromDouble(oi), PyFloat_FromDouble(best.bid_p),
                           PyLong_FromLongLong(best.bid_q), PyFloat_FromDouble(best.ask_p),
                           PyLong_FromLongLong(best.ask_q), PyFloat_FromDouble(f->ltpc.cp), depth};
    return tuple_of(12, items);
}

typedef struct {
    const uint8_t *key;
    Py_ssize_t key_len;
    Buf value;
} Entry;

static PyObject *fastfeed_rows(PyObject *self, PyObject *args) {
    Py_buffer frame;
    long long every_ms = 0;
    PyObject *due = Py_None;
    if (!PyArg_ParseTuple(args, "y*|LO", &frame, &every_ms, &due)) return NULL;
    if (due != Py_None && !PyDict_Check(due)) {
        PyBuffer_Release(&frame);
        PyErr_SetString(PyExc_TypeError, "depth_due must be a dict or None");
        return NULL;
    }
    Buf b = {(const uint8_t *)frame.buf, (const uint8_t *)frame.buf + frame.len};
    Entry *entries = NULL;
    Py_ssize_t n_entries = 0, cap = 0;
    int64_t current_ts = 0;
    PyObject *rows = NULL, *seen = NULL, *pending = NULL;
    Feed *feed = NULL;
    uint32_t field;
    int wt;
    uint64_t v;
    /* First pass: the top level (currentTs may come after the feeds, and may come twice). */
    while (b.p < b.end) {
        if (read_tag(&b, &field, &wt) < 0) goto fallback;
        if (field == 2 && wt == 2) {
            Buf entry;
            if (read_len(&b, &entry) < 0) goto fallback;
            if (n_entries == cap) {
                cap = cap ? 2 * cap : 64;
                Entry *grown = PyMem_Realloc(entries, cap * sizeof(Entry));
                if (grown == NULL) goto fallback;
                entries = grown;
            }
            Entry *e = &entries[n_entries++];
            int have_key = 0, have_value = 0;
            e->key = (const uint8_t *)"";
            e->key_len = 0;
            e->value.p = e->value.end = entry.p;
            while (entry.p < entry.end) {
                if (read_tag(&entry, &field, &wt) < 0) goto fallback;
                if (field == 1 && wt == 2) {
                    Buf k;
                    if (have_key++ || read_len(&entry, &k) < 0) goto fallback;
                    e->key = k.p;
                    e->key_len = k.end - k.p;
                } else if (field == 2 && wt == 2) {
                    if (have_value++ || read_len(&entry, &e->value) < 0) goto fallback;
                } else if (skip(&entry, wt) < 0) goto fallback;
            }
        } else if (field == 3 && wt == 0) {
            if (read_varint(&b, &v) < 0) goto fallback;
            current_ts = (int64_t)v;
        } else if (skip(&b, wt) < 0) goto fallback;
    }
    /* Second pass: each feed's row. */
    rows = PyList_New(0);
    seen = PySet_New(NULL);
    pending = PyDict_New();
    feed = PyMem_Malloc(sizeof(Feed));
    if (rows == NULL || seen == NULL || pending == NULL || feed == NULL) goto error;
    for (Py_ssize_t i = 0; i < n_entries; i++) {
        Entry *e = &entries[i];
        PyObject *key = PyUnicode_DecodeUTF8((const char *)e->key, e->key_len, NULL);
        if (key == NULL) { PyErr_Clear(); goto fallback; }
        int dup = PySet_Contains(seen, key);
        if (dup != 0 || PySet_Add(seen, key) < 0) {
            Py_DECREF(key);  /* a repeated key (protobuf's own rules apply), or out of memory */
            if (dup > 0) goto fallback;
            goto error;
        }
        memset(feed, 0, offsetof(Feed, levels));
        Buf value = e->value;
        if (parse_feed(&value, feed) < 0) { Py_DECREF(key); goto fallback; }
        PyObject *row = row_of(key, feed, current_ts, every_ms, due, pending);
        Py_DECREF(key);
        if (row == NULL) goto error;
        if (row != Py_None) {
            int rc = PyList_Append(rows, row);
            Py_DECREF(row);
            if (rc < 0) goto error;
        }
    }
    if (PyDict_GET_SIZE(pending) && PyDict_Update(due, pending) < 0) goto error;
    PyMem_Free(entries);
    PyMem_Free(feed);
    Py_DECREF(seen);
    Py_DECREF(pending);
    PyBuffer_Release(&frame);
    return rows;
fallback:
    PyMem_Free(entries);
    PyMem_Free(feed);
    Py_XDECREF(rows);
    Py_XDECREF(seen);
    Py_XDECREF(pending);
    PyBuffer_Release(&frame);
    Py_RETURN_NONE;
error:
    PyMem_Free(entries);
    PyMem_Free(feed);
    Py_XDECREF(rows);
    Py_XDECREF(seen);
    Py_XDECREF(pending);
    PyBuffer_Release(&frame);
    return NULL;
}

static PyMethodDef methods[] = {
    {"rows", fastfeed_rows, METH_VARARGS,
     "rows(frame, depth_every_ms=0, depth_due=None) -> list of tick rows, or None to fall back"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastfeed", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastfeed(void) { return PyModule_Create(&module); }
