/*
 * Metrics registry and Prometheus text exposition (format 0.0.4).
 *
 * Families are kept sorted by name and each family's series sorted by their
 * rendered label text, so lookups are binary searches and the output order
 * never depends on the order of updates. One mutex guards the whole
 * registry; an update holds it for a search and at most one insertion.
 */
#define _POSIX_C_SOURCE 200809L
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define COMPONENT "metrics"

/* Rejections logged per registry; later ones are only kept for metrics_last_error(). */
#define LOGGED_REJECTIONS_MAX 10

const double metrics_duration_buckets[] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
};
const size_t metrics_duration_buckets_count =
    sizeof(metrics_duration_buckets) / sizeof(metrics_duration_buckets[0]);

enum family_type {
    TYPE_COUNTER,
    TYPE_GAUGE,
    TYPE_HISTOGRAM,
};

static const char *const type_names[] = {
    [TYPE_COUNTER] = "counter",
    [TYPE_GAUGE] = "gauge",
    [TYPE_HISTOGRAM] = "histogram",
};

struct series {
    char *label_text;       /* k1="v1",k2="v2" with names sorted and values escaped; "" without labels */
    double value;           /* counter and gauge */
    uint64_t *bucket_counts;/* histogram: observations per bucket, not cumulative; [n_buckets] is +Inf */
    double sum;
    uint64_t count;
};

struct family {
    char *name;
    char *help;
    enum family_type type;
    char **label_names;     /* sorted */
    size_t n_labels;
    double *buckets;        /* histogram upper bounds */
    size_t n_buckets;
    struct series *series;  /* sorted by label_text */
    size_t n_series;
    size_t cap_series;
};

struct metrics {
    pthread_mutex_t lock;
    struct family *families;    /* sorted by name */
    size_t n_families;
    size_t cap_families;
    unsigned long rejections;
    char last_error[256];
};

/* A growable string for rendering. */
struct text {
    char *data;
    size_t len;
    size_t cap;
    int failed;             /* an allocation failed; the text is incomplete */
};

/* ---- text builder ---- */

static void text_reserve(struct text *t, size_t extra)
{
    size_t need, cap;
    char *grown;

    if (t->failed)
        return;
    need = t->len + extra + 1;
    if (need <= t->cap)
        return;
    cap = t->cap ? t->cap : 1024;
    while (cap < need)
        cap *= 2;
    grown = realloc(t->data, cap);
    if (grown == NULL) {
        t->failed = 1;
        return;
    }
    t->data = grown;
    t->cap = cap;
    t->data[t->len] = '\0';
}

static void text_add(struct text *t, const char *s, size_t n)
{
    text_reserve(t, n);
    if (t->failed)
        return;
    memcpy(t->data + t->len, s, n);
    t->len += n;
    t->data[t->len] = '\0';
}

static void text_puts(struct text *t, const char *s)
{
    text_add(t, s, strlen(s));
}

/*
 * Append s escaped for a label value (backslash, double quote, line feed)
 * or, with help set, for HELP text (backslash and line feed only).
 */
static void text_escaped(struct text *t, const char *s, int help)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\')
            text_add(t, "\\\\", 2);
        else if (*s == '\n')
            text_add(t, "\\n", 2);
        else if (*s == '"' && !help)
            text_add(t, "\\\"", 2);
        else
            text_add(t, s, 1);
    }
}

/* ---- values ---- */

/*
 * Format v as the text format expects: NaN, +Inf, -Inf, whole numbers below
 * 1e15 in plain digits (counts and Unix times stay readable), and anything
 * else as the shortest %g text that reads back as the same double. This
 * assumes the "C" locale for the decimal point, which nomad-medic never
 * changes.
 */
static void format_value(double v, char *buf, size_t bufsz)
{
    if (isnan(v)) {
        snprintf(buf, bufsz, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, bufsz, "%s", v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (v > -1e15 && v < 1e15 && v == (double)(long long)v) {
        snprintf(buf, bufsz, "%.0f", v);
        return;
    }
    for (int precision = 1; precision <= 17; precision++) {
        snprintf(buf, bufsz, "%.*g", precision, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

/* ---- validation ---- */

int metrics_valid_metric_name(const char *name)
{
    if (name == NULL || name[0] == '\0')
        return 0;
    for (const char *p = name; *p != '\0'; p++) {
        int alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' || *p == ':';
        int digit = *p >= '0' && *p <= '9';

        if (!alpha && !(digit && p != name))
            return 0;
    }
    return 1;
}

int metrics_valid_label_name(const char *name)
{
    if (name == NULL || name[0] == '\0' || strncmp(name, "__", 2) == 0)
        return 0;
    for (const char *p = name; *p != '\0'; p++) {
        int alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_';
        int digit = *p >= '0' && *p <= '9';

        if (!alpha && !(digit && p != name))
            return 0;
    }
    return 1;
}

/* 1 when s is well-formed UTF-8 (no overlong forms, surrogates or values above U+10FFFF). */
static int valid_utf8(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;

    while (*p != '\0') {
        unsigned char c = *p;
        size_t n;
        uint32_t cp;

        if (c < 0x80) {
            p++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        for (size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        p += n + 1;
    }
    return 1;
}

/* ---- errors ---- */

static int reject(struct metrics *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Record why an update was rejected; called with the lock held. */
static int reject(struct metrics *m, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(m->last_error, sizeof(m->last_error), fmt, ap);
    va_end(ap);
    m->rejections++;
    if (m->rejections <= LOGGED_REJECTIONS_MAX)
        log_warn(COMPONENT, "metric update rejected: %s%s", m->last_error,
                 m->rejections == LOGGED_REJECTIONS_MAX ? " (further rejections are not logged)" : "");
    return METRICS_INVALID;
}

char *metrics_last_error(struct metrics *m, char *buf, size_t bufsz)
{
    if (bufsz == 0)
        return buf;
    pthread_mutex_lock(&m->lock);
    snprintf(buf, bufsz, "%s", m->last_error);
    pthread_mutex_unlock(&m->lock);
    return buf;
}

/* ---- labels ---- */

/* One call's labels, sorted by name. Pointers borrow the caller's strings. */
struct label_set {
    const char **names;
    const char **values;
    size_t n;
};

static void label_set_free(struct label_set *ls)
{
    free(ls->names);
    free(ls->values);
}

/* Check and sort the caller's name/value pairs. */
static int parse_labels(struct metrics *m, const char *metric, enum family_type type,
                        const char *const *labels, struct label_set *out)
{
    size_t n = 0;

    memset(out, 0, sizeof(*out));
    if (labels != NULL) {
        while (labels[2 * n] != NULL) {
            if (labels[2 * n + 1] == NULL)
                return reject(m, "%s: label \"%s\" has no value; labels are name/value pairs ending in NULL",
                              metric, labels[2 * n]);
            n++;
        }
    }
    if (n == 0)
        return METRICS_OK;
    out->names = malloc(n * sizeof(*out->names));
    out->values = malloc(n * sizeof(*out->values));
    if (out->names == NULL || out->values == NULL) {
        label_set_free(out);
        return METRICS_NOMEM;
    }
    out->n = n;
    /* Insertion sort: label lists are short. */
    for (size_t i = 0; i < n; i++) {
        const char *name = labels[2 * i];
        const char *value = labels[2 * i + 1];
        size_t at = i;

        if (!metrics_valid_label_name(name) || (type == TYPE_HISTOGRAM && strcmp(name, "le") == 0)) {
            label_set_free(out);
            return reject(m, "%s: invalid label name \"%s\"; use [a-zA-Z_][a-zA-Z0-9_]*, not starting "
                          "with \"__\" (and no \"le\" on a histogram)", metric, name);
        }
        if (!valid_utf8(value)) {
            label_set_free(out);
            return reject(m, "%s: the value of label \"%s\" is not valid UTF-8", metric, name);
        }
        while (at > 0 && strcmp(out->names[at - 1], name) > 0) {
            out->names[at] = out->names[at - 1];
            out->values[at] = out->values[at - 1];
            at--;
        }
        if (at > 0 && strcmp(out->names[at - 1], name) == 0) {
            label_set_free(out);
            return reject(m, "%s: label \"%s\" appears twice", metric, name);
        }
        out->names[at] = name;
        out->values[at] = value;
    }
    return METRICS_OK;
}

/* Render k1="v1",k2="v2" for a label set; NULL when memory runs out. */
static char *label_text(const struct label_set *ls)
{
    struct text t = {0};

    text_reserve(&t, 0);
    for (size_t i = 0; i < ls->n; i++) {
        if (i > 0)
            text_puts(&t, ",");
        text_puts(&t, ls->names[i]);
        text_puts(&t, "=\"");
        text_escaped(&t, ls->values[i], 0);
        text_puts(&t, "\"");
    }
    if (t.failed) {
        free(t.data);
        return NULL;
    }
    return t.data;
}

/* ---- families ---- */

static void family_free(struct family *f)
{
    for (size_t i = 0; i < f->n_series; i++) {
        free(f->series[i].label_text);
        free(f->series[i].bucket_counts);
    }
    free(f->series);
    for (size_t i = 0; i < f->n_labels; i++)
        free(f->label_names[i]);
    free(f->label_names);
    free(f->buckets);
    free(f->name);
    free(f->help);
}

/* Index of the family called name, or where it would be inserted (*found 0). */
static size_t find_family(const struct metrics *m, const char *name, int *found)
{
    size_t lo = 0, hi = m->n_families;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = strcmp(m->families[mid].name, name);

        if (cmp == 0) {
            *found = 1;
            return mid;
        }
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

/* 1 when name is base followed by _bucket, _sum or _count. */
static int is_histogram_part(const char *name, const char *base)
{
    static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
    size_t len = strlen(base);

    if (strncmp(name, base, len) != 0)
        return 0;
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        if (strcmp(name + len, suffixes[i]) == 0)
            return 1;
    }
    return 0;
}

/*
 * Reject a new family whose name is one of an existing histogram's series
 * names, or a new histogram whose series names include an existing family.
 */
static int check_name_clash(struct metrics *m, const char *name, enum family_type type)
{
    for (size_t i = 0; i < m->n_families; i++) {
        const struct family *f = &m->families[i];

        if (f->type == TYPE_HISTOGRAM && is_histogram_part(name, f->name))
            return reject(m, "%s: the name collides with the series of histogram %s; rename one of them",
                          name, f->name);
        if (type == TYPE_HISTOGRAM && is_histogram_part(f->name, name))
            return reject(m, "%s: the histogram's series would collide with %s %s; rename one of them", name,
                          type_names[f->type], f->name);
    }
    return METRICS_OK;
}

static int check_buckets(struct metrics *m, const char *name, const double *buckets, size_t n)
{
    if (n > 0 && buckets == NULL)
        return reject(m, "%s: %zu buckets given but the bucket array is NULL", name, n);
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(buckets[i]))
            return reject(m, "%s: bucket bound %zu is not finite; the +Inf bucket is implicit", name, i);
        if (i > 0 && !(buckets[i] > buckets[i - 1]))
            return reject(m, "%s: bucket bounds must increase strictly, but bound %zu is not above bound %zu",
                          name, i, i - 1);
    }
    return METRICS_OK;
}

/* Create family name at index `at` from the first update's arguments. */
static int add_family(struct metrics *m, size_t at, const char *name, const char *help, enum family_type type,
                      const struct label_set *ls, const double *buckets, size_t n_buckets)
{
    struct family f;

    if (m->n_families == m->cap_families) {
        size_t cap = m->cap_families ? m->cap_families * 2 : 16;
        struct family *grown = realloc(m->families, cap * sizeof(*grown));

        if (grown == NULL)
            return METRICS_NOMEM;
        m->families = grown;
        m->cap_families = cap;
    }
    memset(&f, 0, sizeof(f));
    f.type = type;
    f.name = strdup(name);
    f.help = strdup(help != NULL ? help : "");
    if (f.name == NULL || f.help == NULL)
        goto nomem;
    if (ls->n > 0) {
        f.label_names = calloc(ls->n, sizeof(*f.label_names));
        if (f.label_names == NULL)
            goto nomem;
        f.n_labels = ls->n;
        for (size_t i = 0; i < ls->n; i++) {
            f.label_names[i] = strdup(ls->names[i]);
            if (f.label_names[i] == NULL)
                goto nomem;
        }
    }
    if (n_buckets > 0) {
        f.buckets = malloc(n_buckets * sizeof(*f.buckets));
        if (f.buckets == NULL)
            goto nomem;
        memcpy(f.buckets, buckets, n_buckets * sizeof(*f.buckets));
    }
    f.n_buckets = n_buckets;
    memmove(&m->families[at + 1], &m->families[at], (m->n_families - at) * sizeof(*m->families));
    m->families[at] = f;
    m->n_families++;
    return METRICS_OK;

nomem:
    family_free(&f);
    return METRICS_NOMEM;
}

/*
 * Find or create the family for an update and check that the update fits
 * it. *out points into m->families until the next insertion.
 */
static int get_family(struct metrics *m, const char *name, const char *help, enum family_type type,
                      const struct label_set *ls, const double *buckets, size_t n_buckets,
                      struct family **out)
{
    struct family *f;
    int found;
    size_t at;
    int rc;

    at = find_family(m, name, &found);
    if (!found) {
        if (help != NULL && !valid_utf8(help))
            return reject(m, "%s: the help text is not valid UTF-8", name);
        rc = check_name_clash(m, name, type);
        if (rc != METRICS_OK)
            return rc;
        if (type == TYPE_HISTOGRAM && (rc = check_buckets(m, name, buckets, n_buckets)) != METRICS_OK)
            return rc;
        rc = add_family(m, at, name, help, type, ls, buckets, n_buckets);
        if (rc != METRICS_OK)
            return rc;
        *out = &m->families[at];
        return METRICS_OK;
    }

    f = &m->families[at];
    if (f->type != type)
        return reject(m, "%s is a %s, not a %s", name, type_names[f->type], type_names[type]);
    if (f->n_labels != ls->n)
        return reject(m, "%s: %zu labels given, but the metric has %zu", name, ls->n, f->n_labels);
    for (size_t i = 0; i < ls->n; i++) {
        if (strcmp(f->label_names[i], ls->names[i]) != 0)
            return reject(m, "%s: label \"%s\" given, but the metric's labels are fixed by its first update",
                          name, ls->names[i]);
    }
    if (type == TYPE_HISTOGRAM &&
        (f->n_buckets != n_buckets ||
         (n_buckets > 0 && (buckets == NULL || memcmp(f->buckets, buckets, n_buckets * sizeof(*buckets)) != 0))))
        return reject(m, "%s: the bucket bounds differ from those of its first observation", name);
    *out = f;
    return METRICS_OK;
}

/* Find or create the series with label text key. */
static int get_series(struct family *f, char *key, struct series **out)
{
    size_t lo = 0, hi = f->n_series;
    struct series s;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = strcmp(f->series[mid].label_text, key);

        if (cmp == 0) {
            *out = &f->series[mid];
            free(key);
            return METRICS_OK;
        }
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }

    if (f->n_series == f->cap_series) {
        size_t cap = f->cap_series ? f->cap_series * 2 : 8;
        struct series *grown = realloc(f->series, cap * sizeof(*grown));

        if (grown == NULL) {
            free(key);
            return METRICS_NOMEM;
        }
        f->series = grown;
        f->cap_series = cap;
    }
    memset(&s, 0, sizeof(s));
    s.label_text = key;
    if (f->type == TYPE_HISTOGRAM) {
        s.bucket_counts = calloc(f->n_buckets + 1, sizeof(*s.bucket_counts));
        if (s.bucket_counts == NULL) {
            free(key);
            return METRICS_NOMEM;
        }
    }
    memmove(&f->series[lo + 1], &f->series[lo], (f->n_series - lo) * sizeof(*f->series));
    f->series[lo] = s;
    f->n_series++;
    *out = &f->series[lo];
    return METRICS_OK;
}

/* ---- updates ---- */

/* Locate (creating as needed) the series an update goes to. Called with the lock held. */
static int locate(struct metrics *m, const char *name, const char *help, enum family_type type,
                  const double *buckets, size_t n_buckets, const char *const *labels, struct series **out)
{
    struct label_set ls;
    struct family *f = NULL;
    char *key;
    int rc;

    if (!metrics_valid_metric_name(name))
        return reject(m, "invalid metric name \"%s\"; use [a-zA-Z_:][a-zA-Z0-9_:]*", name ? name : "(null)");
    rc = parse_labels(m, name, type, labels, &ls);
    if (rc != METRICS_OK)
        return rc;
    rc = get_family(m, name, help, type, &ls, buckets, n_buckets, &f);
    if (rc == METRICS_OK) {
        key = label_text(&ls);
        rc = key == NULL ? METRICS_NOMEM : get_series(f, key, out);
    }
    label_set_free(&ls);
    return rc;
}

int metrics_counter_add(struct metrics *m, const char *name, const char *help, const char *const *labels,
                        double value)
{
    struct series *s = NULL;
    int rc;

    pthread_mutex_lock(&m->lock);
    if (!isfinite(value) || value < 0)
        rc = reject(m, "%s: a counter can only grow, by a finite amount, but %g was added",
                    name ? name : "(null)", value);
    else
        rc = locate(m, name, help, TYPE_COUNTER, NULL, 0, labels, &s);
    if (rc == METRICS_OK)
        s->value += value;
    pthread_mutex_unlock(&m->lock);
    return rc;
}

int metrics_gauge_set(struct metrics *m, const char *name, const char *help, const char *const *labels,
                      double value)
{
    struct series *s = NULL;
    int rc;

    pthread_mutex_lock(&m->lock);
    rc = locate(m, name, help, TYPE_GAUGE, NULL, 0, labels, &s);
    if (rc == METRICS_OK)
        s->value = value;
    pthread_mutex_unlock(&m->lock);
    return rc;
}

int metrics_histogram_observe(struct metrics *m, const char *name, const char *help, const double *buckets,
                              size_t n_buckets, const char *const *labels, double value)
{
    struct series *s = NULL;
    size_t b = 0;
    int rc;

    pthread_mutex_lock(&m->lock);
    if (isnan(value))
        rc = reject(m, "%s: cannot observe NaN", name ? name : "(null)");
    else
        rc = locate(m, name, help, TYPE_HISTOGRAM, buckets, n_buckets, labels, &s);
    if (rc == METRICS_OK) {
        while (b < n_buckets && value > buckets[b])
            b++;
        s->bucket_counts[b]++;
        s->sum += value;
        s->count++;
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

/* ---- rendering ---- */

/* Append name{labels} or name{labels,extra} and the value. */
static void render_sample(struct text *t, const char *name, const char *suffix, const char *labels,
                          const char *extra, double value)
{
    char number[40];

    text_puts(t, name);
    text_puts(t, suffix);
    if (labels[0] != '\0' || extra != NULL) {
        text_puts(t, "{");
        text_puts(t, labels);
        if (extra != NULL) {
            if (labels[0] != '\0')
                text_puts(t, ",");
            text_puts(t, extra);
        }
        text_puts(t, "}");
    }
    format_value(value, number, sizeof(number));
    text_puts(t, " ");
    text_puts(t, number);
    text_puts(t, "\n");
}

static void render_histogram(struct text *t, const struct family *f, const struct series *s)
{
    char le[64], bound[40];
    uint64_t cumulative = 0;

    for (size_t b = 0; b <= f->n_buckets; b++) {
        cumulative += s->bucket_counts[b];
        if (b < f->n_buckets)
            format_value(f->buckets[b], bound, sizeof(bound));
        else
            snprintf(bound, sizeof(bound), "+Inf");
        snprintf(le, sizeof(le), "le=\"%s\"", bound);
        render_sample(t, f->name, "_bucket", s->label_text, le, (double)cumulative);
    }
    render_sample(t, f->name, "_sum", s->label_text, NULL, s->sum);
    render_sample(t, f->name, "_count", s->label_text, NULL, (double)s->count);
}

int metrics_render(struct metrics *m, char **text, size_t *len)
{
    struct text t = {0};

    *text = NULL;
    *len = 0;
    text_reserve(&t, 0);
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n_families; i++) {
        const struct family *f = &m->families[i];

        text_puts(&t, "# HELP ");
        text_puts(&t, f->name);
        text_puts(&t, " ");
        text_escaped(&t, f->help, 1);
        text_puts(&t, "\n# TYPE ");
        text_puts(&t, f->name);
        text_puts(&t, " ");
        text_puts(&t, type_names[f->type]);
        text_puts(&t, "\n");
        for (size_t k = 0; k < f->n_series; k++) {
            if (f->type == TYPE_HISTOGRAM)
                render_histogram(&t, f, &f->series[k]);
            else
                render_sample(&t, f->name, "", f->series[k].label_text, NULL, f->series[k].value);
        }
    }
    pthread_mutex_unlock(&m->lock);
    if (t.failed) {
        free(t.data);
        return METRICS_NOMEM;
    }
    *text = t.data;
    *len = t.len;
    return METRICS_OK;
}

/* ---- registry ---- */

struct metrics *metrics_new(void)
{
    struct metrics *m = calloc(1, sizeof(*m));

    if (m == NULL)
        return NULL;
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m);
        return NULL;
    }
    return m;
}

void metrics_free(struct metrics *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n_families; i++)
        family_free(&m->families[i]);
    free(m->families);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* ---- Nomad requests ---- */

/*
 * Templates of the Nomad API paths, segment by segment. ":id" and ":name"
 * match one non-empty segment, ":path" one or more (last only), and any
 * other segment matches itself. Paths without an ID need an entry only when
 * they have more than one segment after /v1, because the fallback keeps
 * only the first.
 */
static const char *const endpoint_templates[] = {
    "/v1/agent/health",
    "/v1/agent/members",
    "/v1/agent/self",
    "/v1/agent/servers",
    "/v1/allocation/:id",
    "/v1/allocation/:id/checks",
    "/v1/allocation/:id/services",
    "/v1/allocation/:id/stop",
    "/v1/client/allocation/:id/restart",
    "/v1/client/allocation/:id/signal",
    "/v1/client/allocation/:id/stats",
    "/v1/deployment/:id",
    "/v1/evaluation/:id",
    "/v1/evaluation/:id/allocations",
    "/v1/job/:id",
    "/v1/job/:id/allocations",
    "/v1/job/:id/evaluations",
    "/v1/job/:id/summary",
    "/v1/namespace/:name",
    "/v1/node/:id",
    "/v1/node/:id/allocations",
    "/v1/node/:id/drain",
    "/v1/node/:id/eligibility",
    "/v1/node/:id/evaluate",
    "/v1/node/:id/purge",
    "/v1/operator/autopilot/configuration",
    "/v1/operator/autopilot/health",
    "/v1/operator/raft/configuration",
    "/v1/operator/scheduler/configuration",
    "/v1/service/:name",
    "/v1/service/:name/:id",
    "/v1/status/leader",
    "/v1/status/peers",
    "/v1/system/gc",
    "/v1/system/reconcile/summaries",
    "/v1/var/:path",
};

/* Length of the path before its query string or fragment. */
static size_t path_only_len(const char *path)
{
    return strcspn(path, "?#");
}

/* Whether path[0..len) (starting with '/') matches template tpl. */
static int template_matches(const char *tpl, const char *path, size_t len)
{
    const char *p = path, *end = path + len;

    while (*tpl != '\0') {
        const char *tseg, *pseg;
        size_t tlen, plen;

        if (*tpl != '/' || p >= end || *p != '/')
            return 0;
        tseg = tpl + 1;
        tlen = strcspn(tseg, "/");
        pseg = p + 1;
        plen = 0;
        while (pseg + plen < end && pseg[plen] != '/')
            plen++;
        if (tlen == 5 && strncmp(tseg, ":path", 5) == 0)
            return plen > 0;
        if (tseg[0] == ':') {
            if (plen == 0)
                return 0;
        } else if (tlen != plen || strncmp(tseg, pseg, tlen) != 0) {
            return 0;
        }
        tpl = tseg + tlen;
        p = pseg + plen;
    }
    return p == end;
}

/* Whether s[0..len) is a plain lower-case word: an API resource name, never an ID. */
static int is_word(const char *s, size_t len)
{
    if (len == 0 || len > 32)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || s[i] == '_' || s[i] == '-'))
            return 0;
    }
    return 1;
}

char *metrics_nomad_endpoint(const char *path, char *out, size_t outsz)
{
    size_t len, first_len;
    const char *first;

    if (outsz == 0)
        return out;
    if (path == NULL || strncmp(path, "/v1/", 4) != 0) {
        snprintf(out, outsz, "other");
        return out;
    }
    len = path_only_len(path);
    for (size_t i = 0; i < sizeof(endpoint_templates) / sizeof(endpoint_templates[0]); i++) {
        if (template_matches(endpoint_templates[i], path, len)) {
            snprintf(out, outsz, "%s", endpoint_templates[i]);
            return out;
        }
    }
    first = path + 4;
    first_len = 0;
    while (first + first_len < path + len && first[first_len] != '/')
        first_len++;
    if (!is_word(first, first_len))
        snprintf(out, outsz, "other");
    else if (first + first_len < path + len)
        snprintf(out, outsz, "/v1/%.*s/...", (int)first_len, first);
    else
        snprintf(out, outsz, "/v1/%.*s", (int)first_len, first);
    return out;
}

/* The status label: the HTTP status of a response, or what kept a response from arriving. */
static const char *status_label(long status, enum nomad_result result, char *buf, size_t bufsz)
{
    switch (result) {
    case NOMAD_ERR_TRANSPORT:
        return "transport_error";
    case NOMAD_ERR_TIMEOUT:
        return "timeout";
    case NOMAD_ERR_TOO_LARGE:
        return "too_large";
    case NOMAD_ERR_INTERNAL:
        return "internal_error";
    case NOMAD_OK:
    case NOMAD_ERR_STATUS:
    case NOMAD_ERR_NO_LEADER:
        break;
    }
    if (status < 100 || status > 999)
        return "no_status";
    snprintf(buf, bufsz, "%ld", status);
    return buf;
}

static const char *method_label(const char *method)
{
    static const char *const known[] = {"GET", "PUT", "POST", "DELETE"};

    for (size_t i = 0; method != NULL && i < sizeof(known) / sizeof(known[0]); i++) {
        if (strcmp(method, known[i]) == 0)
            return known[i];
    }
    return "other";
}

void metrics_observe_nomad_request(void *ctx, const char *method, const char *path, long status,
                                   enum nomad_result result, double seconds)
{
    struct metrics *m = ctx;
    char endpoint[96], code[16];
    const char *counter_labels[] = {
        "endpoint", metrics_nomad_endpoint(path, endpoint, sizeof(endpoint)),
        "method", method_label(method),
        "status", status_label(status, result, code, sizeof(code)),
        NULL,
    };
    const char *duration_labels[] = {"endpoint", endpoint, NULL};

    metrics_counter_add(m, "nomad_medic_nomad_requests_total",
                        "Nomad API request attempts, retries included, by endpoint template, method and "
                        "HTTP status (or the failure when no response arrived).",
                        counter_labels, 1);
    metrics_histogram_observe(m, "nomad_medic_nomad_request_duration_seconds",
                              "Duration of Nomad API request attempts in seconds, by endpoint template.",
                              metrics_duration_buckets, metrics_duration_buckets_count, duration_labels,
                              seconds < 0 ? 0 : seconds);
}
