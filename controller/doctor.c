/*
 * `nomad-medic doctor`: read the cluster, then check its configuration.
 *
 * The file has three parts: reading (every request is a GET, and each
 * failure is recorded), version arithmetic for the known-bug table, and the
 * checks, which only look at what was read.
 */
#define _POSIX_C_SOURCE 200809L
#include "doctor.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* Nomad's server defaults for the heartbeat settings (server block). */
#define DEFAULT_HEARTBEAT_GRACE_S 10.0
#define DEFAULT_MIN_HEARTBEAT_TTL_S 10.0
#define DEFAULT_MAX_HEARTBEATS_PER_SECOND 50.0

/* Job and node reads sent together through source_get_many(). */
#define DETAIL_BATCH 32

/* Names listed in one line of text before "and N more". JSON evidence lists every name. */
#define MAX_NAMES_IN_TEXT 10

#define NS_PER_S 1e9

/* ---- small helpers ---- */

static const char *json_string(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static char *dup_or_empty(const char *text)
{
    return strdup(text != NULL ? text : "");
}

/* printf into a new string; NULL when memory runs out. */
__attribute__((format(printf, 1, 2)))
static char *format(const char *fmt, ...)
{
    va_list ap;
    char *text;
    int len;

    va_start(ap, fmt);
    len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (len < 0)
        return NULL;
    text = malloc((size_t)len + 1);
    if (text == NULL)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(text, (size_t)len + 1, fmt, ap);
    va_end(ap);
    return text;
}

/* A growing string; failed is set when memory ran out, and then text is NULL. */
struct strbuf {
    char *text;
    size_t len;
    size_t cap;
    int failed;
};

__attribute__((format(printf, 2, 3)))
static void sb_printf(struct strbuf *sb, const char *fmt, ...)
{
    va_list ap;
    int len;

    if (sb->failed)
        return;
    va_start(ap, fmt);
    len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (len < 0) {
        sb->failed = 1;
        return;
    }
    if (sb->len + (size_t)len + 1 > sb->cap) {
        size_t cap = (sb->len + (size_t)len + 1) * 2;
        char *grown = realloc(sb->text, cap);

        if (grown == NULL) {
            free(sb->text);
            sb->text = NULL;
            sb->failed = 1;
            return;
        }
        sb->text = grown;
        sb->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(sb->text + sb->len, sb->cap - sb->len, fmt, ap);
    va_end(ap);
    sb->len += (size_t)len;
}

/* Hand over the built string (never NULL unless memory ran out). */
static char *sb_take(struct strbuf *sb)
{
    char *text = sb->failed ? NULL : (sb->text != NULL ? sb->text : strdup(""));

    sb->text = NULL;
    sb->len = sb->cap = 0;
    return text;
}

static int grow(void **array, size_t *cap, size_t n, size_t size)
{
    size_t new_cap;
    void *grown;

    if (n < *cap)
        return 0;
    new_cap = *cap ? *cap * 2 : 16;
    grown = realloc(*array, new_cap * size);
    if (grown == NULL)
        return -1;
    *array = grown;
    *cap = new_cap;
    return 0;
}

void doctor_format_duration(double seconds, char *buf, size_t bufsz)
{
    long long ms = llround(seconds * 1000.0);
    long long hours, minutes, rest_ms;
    size_t len = 0;

    if (ms <= 0) {
        snprintf(buf, bufsz, "0s");
        return;
    }
    if (ms < 1000) {
        snprintf(buf, bufsz, "%lldms", ms);
        return;
    }
    hours = ms / 3600000;
    minutes = ms % 3600000 / 60000;
    rest_ms = ms % 60000;
    buf[0] = '\0';
    if (hours > 0)
        len += (size_t)snprintf(buf + len, bufsz > len ? bufsz - len : 0, "%lldh", hours);
    if (minutes > 0 && len < bufsz)
        len += (size_t)snprintf(buf + len, bufsz - len, "%lldm", minutes);
    if (rest_ms > 0 && len < bufsz) {
        if (rest_ms % 1000 == 0) {
            snprintf(buf + len, bufsz - len, "%llds", rest_ms / 1000);
        } else {
            char frac[8];
            size_t end;

            snprintf(frac, sizeof(frac), "%03lld", rest_ms % 1000);
            end = strlen(frac);
            while (end > 0 && frac[end - 1] == '0')
                frac[--end] = '\0';
            snprintf(buf + len, bufsz - len, "%lld.%ss", rest_ms / 1000, frac);
        }
    }
}

/*
 * Parse a Go duration string ("10s", "1m30s", "1.5h", "250ms", "0") into
 * seconds, as time.ParseDuration does. Returns 0, or -1 when text is not one.
 */
static int parse_go_duration(const char *text, double *seconds)
{
    static const struct {
        const char *unit;
        double seconds;
    } units[] = {
        {"ns", 1e-9}, {"us", 1e-6}, {"\xc2\xb5s", 1e-6}, {"\xce\xbcs", 1e-6},
        {"ms", 1e-3}, {"s", 1.0}, {"m", 60.0}, {"h", 3600.0},
    };
    const char *p = text;
    double sign = 1.0;
    double total = 0.0;

    if (*p == '-' || *p == '+') {
        sign = *p == '-' ? -1.0 : 1.0;
        p++;
    }
    if (strcmp(p, "0") == 0) {
        *seconds = 0.0;
        return 0;
    }
    if (*p == '\0')
        return -1;
    while (*p != '\0') {
        double value = 0.0;
        double scale = 1.0;
        int digits = 0;
        size_t i;

        while (isdigit((unsigned char)*p)) {
            value = value * 10.0 + (*p++ - '0');
            digits++;
        }
        if (*p == '.') {
            p++;
            while (isdigit((unsigned char)*p)) {
                scale /= 10.0;
                value += (*p++ - '0') * scale;
                digits++;
            }
        }
        if (digits == 0)
            return -1;
        for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            size_t len = strlen(units[i].unit);

            /* "ms" comes before "m" in the table, so the longer unit wins. */
            if (strncmp(p, units[i].unit, len) == 0) {
                total += value * units[i].seconds;
                p += len;
                break;
            }
        }
        if (i == sizeof(units) / sizeof(units[0]))
            return -1;
    }
    *seconds = sign * total;
    return 0;
}

/* ---- what was read ---- */

struct server_member {
    char *name;                 /* gossip name, "server-1.global" */
    char *addr;                 /* gossip address (host only) */
    char *rpc_addr;             /* "host:port" from the rpc_addr (or Addr) and port tags */
    char *id;                   /* the id tag (Raft server ID), "" when absent */
    char *status;               /* alive, failed, leaving */
    char *version;              /* the build tag, "" when absent */
};

struct client_node {
    char *id;
    char *name;
    char *address;
    char *status;
    char *version;              /* "" when absent */
    int reserved_known;         /* 0 until ReservedResources was read */
    double reserved_cpu_mhz;
    double reserved_memory_mb;
};

struct raft_peer {
    char *id;
    char *address;
    char *node;
};

struct autopilot_server {
    char *name;
    char *address;
    char *serf_status;
    char *last_contact;
    int healthy;
};

/* One task group's disconnect settings, with durations in seconds (0 when unset). */
struct task_group {
    char *namespace_name;
    char *job;
    char *group;
    double lost_after_s;
    double stop_on_client_after_s;
    int replace;                        /* disconnect.replace: 1, 0, or -1 when unset */
    int has_max_client_disconnect;      /* deprecated fields: set at all (non-null) */
    double max_client_disconnect_s;
    int has_stop_after_client_disconnect;
    double stop_after_client_disconnect_s;
    int prevent_reschedule_on_lost;
};

/* The reads, in read_paths order. cluster.read_ok records which succeeded, and each check needs some of them. */
enum read_id {
    READ_MEMBERS,
    READ_SELF,
    READ_SCHEDULER,
    READ_RAFT,
    READ_AUTOPILOT,
    READ_NODES,
    READ_JOBS,
    N_READS,
};

static const char *const read_paths[N_READS] = {
    "/v1/agent/members",
    "/v1/agent/self",
    "/v1/operator/scheduler/configuration",
    "/v1/operator/raft/configuration",
    "/v1/operator/autopilot/health",
    "/v1/nodes?resources=true",
    "/v1/jobs?namespace=*",
};

struct cluster {
    int read_ok[N_READS];

    struct server_member *servers;
    size_t n_servers, cap_servers;
    struct client_node *nodes;
    size_t n_nodes, cap_nodes;
    size_t failed_node_reads;           /* GET /v1/node/<id> that failed */
    struct raft_peer *peers;
    size_t n_peers, cap_peers;
    struct autopilot_server *autopilot;
    size_t n_autopilot, cap_autopilot;
    int autopilot_healthy;
    double failure_tolerance;           /* -1 when absent */
    int oversubscription;

    /* Raw heartbeat settings from /v1/agent/self config.Server. */
    int self_is_server;
    const cJSON *grace, *min_ttl, *rate;
    cJSON *self_root;

    struct task_group *groups;
    size_t n_groups, cap_groups;
    size_t n_jobs;
    size_t failed_job_reads;
};

static void free_cluster(struct cluster *c)
{
    for (size_t i = 0; i < c->n_servers; i++) {
        free(c->servers[i].name);
        free(c->servers[i].addr);
        free(c->servers[i].rpc_addr);
        free(c->servers[i].id);
        free(c->servers[i].status);
        free(c->servers[i].version);
    }
    free(c->servers);
    for (size_t i = 0; i < c->n_nodes; i++) {
        free(c->nodes[i].id);
        free(c->nodes[i].name);
        free(c->nodes[i].address);
        free(c->nodes[i].status);
        free(c->nodes[i].version);
    }
    free(c->nodes);
    for (size_t i = 0; i < c->n_peers; i++) {
        free(c->peers[i].id);
        free(c->peers[i].address);
        free(c->peers[i].node);
    }
    free(c->peers);
    for (size_t i = 0; i < c->n_autopilot; i++) {
        free(c->autopilot[i].name);
        free(c->autopilot[i].address);
        free(c->autopilot[i].serf_status);
        free(c->autopilot[i].last_contact);
    }
    free(c->autopilot);
    for (size_t i = 0; i < c->n_groups; i++) {
        free(c->groups[i].namespace_name);
        free(c->groups[i].job);
        free(c->groups[i].group);
    }
    free(c->groups);
    cJSON_Delete(c->self_root);
}

/* ---- the report ---- */

static const struct {
    const char *id;
    const char *title;
} check_table[DOCTOR_N_CHECKS] = {
    {"colocated_server_client", "servers and clients on the same host"},
    {"client_reserved_missing", "clients without reserved CPU or memory"},
    {"servers_too_few", "fewer than three servers"},
    {"servers_even", "an even number of servers"},
    {"raft_missing_server", "servers missing from the Raft configuration"},
    {"autopilot_unhealthy", "servers unhealthy in autopilot"},
    {"group_stops_on_disconnect", "task groups that stop their work when the client loses the servers"},
    {"deprecated_disconnect_fields", "deprecated disconnect fields that Nomad 1.10 and later ignore"},
    {"nomad_version_bug", "Nomad versions with known bugs in heartbeat and disconnect handling"},
    {"nomad_version_unknown", "agents whose Nomad version cannot be read"},
    {"disconnect_window_short", "disconnect windows shorter than heartbeat loss can take"},
};

enum check_index {
    CHECK_COLOCATED,
    CHECK_RESERVED,
    CHECK_TOO_FEW,
    CHECK_EVEN,
    CHECK_RAFT,
    CHECK_AUTOPILOT,
    CHECK_STOPS,
    CHECK_DEPRECATED,
    CHECK_VERSION_BUG,
    CHECK_VERSION_UNKNOWN,
    CHECK_WINDOW,
};

const char *doctor_severity_name(enum doctor_severity severity)
{
    switch (severity) {
    case DOCTOR_INFO:
        return "info";
    case DOCTOR_WARNING:
        return "warning";
    case DOCTOR_CRITICAL:
        return "critical";
    }
    return "unknown";
}

size_t doctor_count(const struct doctor_report *report, enum doctor_severity severity)
{
    size_t n = 0;

    for (size_t i = 0; i < report->n_findings; i++)
        n += report->findings[i].severity == severity;
    return n;
}

void doctor_report_free(struct doctor_report *report)
{
    for (size_t i = 0; i < report->n_findings; i++) {
        free(report->findings[i].subject);
        free(report->findings[i].observed);
        free(report->findings[i].impact);
        free(report->findings[i].fix);
        cJSON_Delete(report->findings[i].evidence);
    }
    free(report->findings);
    for (size_t i = 0; i < DOCTOR_N_CHECKS; i++)
        free(report->checks[i].note);
    for (size_t i = 0; i < report->n_failed_reads; i++) {
        free(report->failed_reads[i].read);
        free(report->failed_reads[i].error);
    }
    free(report->failed_reads);
    free(report->heartbeat.assumed_because);
    memset(report, 0, sizeof(*report));
}

/*
 * Add a finding to check. Takes ownership of the four strings and evidence
 * on success and on failure. Returns 0, or -1 when memory runs out
 * (including when any of them is NULL).
 */
static int add_finding(struct doctor_report *r, struct doctor_check *check, enum doctor_severity severity,
                       char *subject, char *observed, char *impact, char *fix, cJSON *evidence)
{
    struct doctor_finding *f;

    if (subject == NULL || observed == NULL || impact == NULL || fix == NULL || evidence == NULL ||
        grow((void **)&r->findings, &r->cap_findings, r->n_findings, sizeof(*r->findings)) != 0) {
        free(subject);
        free(observed);
        free(impact);
        free(fix);
        cJSON_Delete(evidence);
        return -1;
    }
    f = &r->findings[r->n_findings++];
    f->check = check->id;
    f->severity = severity;
    f->subject = subject;
    f->observed = observed;
    f->impact = impact;
    f->fix = fix;
    f->evidence = evidence;
    check->findings++;
    return 0;
}

/* Record a failed read; read and error are copied. Returns 0, or -1 when memory runs out. */
static int add_failed_read(struct doctor_report *r, const char *read, const char *error)
{
    struct doctor_failed_read *f;

    log_warn("doctor", "read failed: %s", error);
    if (grow((void **)&r->failed_reads, &r->cap_failed_reads, r->n_failed_reads, sizeof(*r->failed_reads)) != 0)
        return -1;
    f = &r->failed_reads[r->n_failed_reads];
    f->read = format("GET %s", read);
    f->error = dup_or_empty(error);
    if (f->read == NULL || f->error == NULL) {
        free(f->read);
        free(f->error);
        return -1;
    }
    r->n_failed_reads++;
    return 0;
}

/* ---- reading ---- */

/*
 * The JSON body of a finished response, or NULL with error filled. A 429
 * from autopilot carries its report like a 200 does.
 */
static cJSON *response_json(const char *path, const struct nomad_response *resp, int accept_429,
                            char *error, size_t errsz)
{
    cJSON *root;

    if (resp->result != NOMAD_OK &&
        !(accept_429 && resp->result == NOMAD_ERR_STATUS && resp->status == 429)) {
        snprintf(error, errsz, "%s", resp->error[0] ? resp->error : nomad_result_name(resp->result));
        return NULL;
    }
    if (resp->body == NULL || resp->body_len == 0) {
        snprintf(error, errsz, "GET %s: empty response body where JSON was expected", path);
        return NULL;
    }
    root = cJSON_ParseWithLength(resp->body, resp->body_len);
    if (root == NULL)
        snprintf(error, errsz, "GET %s: invalid or truncated JSON in response (%zu bytes)", path, resp->body_len);
    return root;
}

static int parse_members(struct cluster *c, const cJSON *root, char *error, size_t errsz)
{
    const cJSON *members = cJSON_GetObjectItemCaseSensitive(root, "Members");
    const cJSON *member;

    if (!cJSON_IsArray(members)) {
        snprintf(error, errsz, "GET /v1/agent/members: no Members array in the response");
        return 0;
    }
    cJSON_ArrayForEach(member, members) {
        const cJSON *tags = cJSON_GetObjectItemCaseSensitive(member, "Tags");
        const char *role = json_string(tags, "role");
        const char *addr = json_string(member, "Addr");
        const char *rpc_host = json_string(tags, "rpc_addr");
        const char *port = json_string(tags, "port");
        const char *status = json_string(member, "Status");
        struct server_member *s;

        /* Servers carry the role tag "nomad". A member that left is no longer part of the cluster. */
        if (role == NULL || strcmp(role, "nomad") != 0 || (status != NULL && strcmp(status, "left") == 0))
            continue;
        if (grow((void **)&c->servers, &c->cap_servers, c->n_servers, sizeof(*c->servers)) != 0)
            return -1;
        s = &c->servers[c->n_servers++];
        memset(s, 0, sizeof(*s));
        s->name = dup_or_empty(json_string(member, "Name"));
        s->addr = dup_or_empty(addr);
        s->rpc_addr = format("%s:%s", rpc_host != NULL ? rpc_host : (addr != NULL ? addr : ""),
                             port != NULL ? port : "4647");
        s->id = dup_or_empty(json_string(tags, "id"));
        s->status = dup_or_empty(status);
        s->version = dup_or_empty(json_string(tags, "build"));
        if (s->name == NULL || s->addr == NULL || s->rpc_addr == NULL || s->id == NULL || s->status == NULL ||
            s->version == NULL)
            return -1;
    }
    return 1;
}

static int parse_raft(struct cluster *c, const cJSON *root, char *error, size_t errsz)
{
    const cJSON *servers = cJSON_GetObjectItemCaseSensitive(root, "Servers");
    const cJSON *server;

    if (!cJSON_IsArray(servers)) {
        snprintf(error, errsz, "GET /v1/operator/raft/configuration: no Servers array in the response");
        return 0;
    }
    cJSON_ArrayForEach(server, servers) {
        struct raft_peer *p;

        if (grow((void **)&c->peers, &c->cap_peers, c->n_peers, sizeof(*c->peers)) != 0)
            return -1;
        p = &c->peers[c->n_peers++];
        p->id = dup_or_empty(json_string(server, "ID"));
        p->address = dup_or_empty(json_string(server, "Address"));
        p->node = dup_or_empty(json_string(server, "Node"));
        if (p->id == NULL || p->address == NULL || p->node == NULL)
            return -1;
    }
    return 1;
}

static int parse_autopilot(struct cluster *c, const cJSON *root, char *error, size_t errsz)
{
    const cJSON *healthy = cJSON_GetObjectItemCaseSensitive(root, "Healthy");
    const cJSON *tolerance = cJSON_GetObjectItemCaseSensitive(root, "FailureTolerance");
    const cJSON *server;

    if (!cJSON_IsBool(healthy)) {
        snprintf(error, errsz, "GET /v1/operator/autopilot/health: no Healthy field in the response");
        return 0;
    }
    c->autopilot_healthy = cJSON_IsTrue(healthy);
    c->failure_tolerance = cJSON_IsNumber(tolerance) ? tolerance->valuedouble : -1.0;
    cJSON_ArrayForEach(server, cJSON_GetObjectItemCaseSensitive(root, "Servers")) {
        struct autopilot_server *a;

        if (grow((void **)&c->autopilot, &c->cap_autopilot, c->n_autopilot, sizeof(*c->autopilot)) != 0)
            return -1;
        a = &c->autopilot[c->n_autopilot++];
        a->name = dup_or_empty(json_string(server, "Name"));
        a->address = dup_or_empty(json_string(server, "Address"));
        a->serf_status = dup_or_empty(json_string(server, "SerfStatus"));
        a->last_contact = dup_or_empty(json_string(server, "LastContact"));
        a->healthy = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(server, "Healthy"));
        if (a->name == NULL || a->address == NULL || a->serf_status == NULL || a->last_contact == NULL)
            return -1;
    }
    return 1;
}

static int parse_scheduler(struct cluster *c, const cJSON *root, char *error, size_t errsz)
{
    const cJSON *config = cJSON_GetObjectItemCaseSensitive(root, "SchedulerConfig");

    if (!cJSON_IsObject(config)) {
        snprintf(error, errsz, "GET /v1/operator/scheduler/configuration: no SchedulerConfig object in the response");
        return 0;
    }
    c->oversubscription = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(config, "MemoryOversubscriptionEnabled"));
    return 1;
}

/* Keeps root: the heartbeat values point into it. */
static int parse_self(struct cluster *c, cJSON *root, char *error, size_t errsz)
{
    const cJSON *config = cJSON_GetObjectItemCaseSensitive(root, "config");
    const cJSON *server = cJSON_GetObjectItemCaseSensitive(config, "Server");

    if (!cJSON_IsObject(config)) {
        snprintf(error, errsz, "GET /v1/agent/self: no config object in the response");
        return 0;
    }
    c->self_root = root;
    c->self_is_server = cJSON_IsObject(server) && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(server, "Enabled"));
    if (c->self_is_server) {
        c->grace = cJSON_GetObjectItemCaseSensitive(server, "HeartbeatGrace");
        c->min_ttl = cJSON_GetObjectItemCaseSensitive(server, "MinHeartbeatTTL");
        c->rate = cJSON_GetObjectItemCaseSensitive(server, "MaxHeartbeatsPerSecond");
    }
    return 1;
}

/* The reads that return one object, sent together. Returns -1 only when memory runs out. */
static int read_singles(struct source *src, struct cluster *c, struct doctor_report *r)
{
    static const enum read_id singles[] = {READ_MEMBERS, READ_SELF, READ_SCHEDULER, READ_RAFT, READ_AUTOPILOT};
    enum { N_SINGLES = sizeof(singles) / sizeof(singles[0]) };
    const char *paths[N_SINGLES];
    struct nomad_response resps[N_SINGLES];
    int rc = 0;

    for (size_t i = 0; i < N_SINGLES; i++)
        paths[i] = read_paths[singles[i]];
    source_get_many(src, paths, N_SINGLES, resps);
    for (size_t i = 0; i < N_SINGLES; i++) {
        enum read_id id = singles[i];
        char error[768] = "";
        cJSON *root = response_json(paths[i], &resps[i], id == READ_AUTOPILOT, error, sizeof(error));
        int ok = 0;

        if (root != NULL) {
            switch (id) {
            case READ_MEMBERS: ok = parse_members(c, root, error, sizeof(error)); break;
            case READ_SELF: ok = parse_self(c, root, error, sizeof(error)); break;
            case READ_SCHEDULER: ok = parse_scheduler(c, root, error, sizeof(error)); break;
            case READ_RAFT: ok = parse_raft(c, root, error, sizeof(error)); break;
            case READ_AUTOPILOT: ok = parse_autopilot(c, root, error, sizeof(error)); break;
            default: break;
            }
            /* parse_self() keeps the root it accepted. */
            if (id != READ_SELF || ok != 1)
                cJSON_Delete(root);
        }
        if (ok < 0)
            rc = -1;
        c->read_ok[id] = ok == 1;
        if (ok == 0 && add_failed_read(r, paths[i], error) != 0)
            rc = -1;
    }
    for (size_t i = 0; i < N_SINGLES; i++)
        nomad_response_free(&resps[i]);
    return rc;
}

/* Called for each element of a list; ctx is read_pages()'s argument. Returns 0, or -1 when memory runs out. */
typedef int (*item_fn)(void *ctx, const cJSON *item);

/*
 * Read every page of base_path (which has a query string) and call fn for
 * each element. Returns 1 when complete, 0 when a read failed (recorded in
 * r), -1 when memory runs out.
 */
static int read_pages(struct source *src, struct doctor_report *r, const char *base_path, item_fn fn, void *ctx)
{
    char path[2048];
    char error[768] = "";
    char *token = NULL;
    int rc = 1;

    for (;;) {
        struct nomad_response resp;
        const cJSON *item;
        cJSON *root;
        size_t len = (size_t)snprintf(path, sizeof(path), "%s", base_path);

        if (src->per_page > 0)
            len += (size_t)snprintf(path + len, sizeof(path) > len ? sizeof(path) - len : 0, "&per_page=%d",
                                    src->per_page);
        if (token != NULL) {
            char *escaped = nomad_escape(token);

            if (escaped == NULL) {
                rc = -1;
                break;
            }
            len += (size_t)snprintf(path + len, sizeof(path) > len ? sizeof(path) - len : 0, "&next_token=%s",
                                    escaped);
            free(escaped);
        }
        if (len >= sizeof(path)) {
            snprintf(error, sizeof(error), "GET %s: the next page's path is too long", base_path);
            rc = 0;
            break;
        }
        source_get(src, path, &resp);
        root = response_json(path, &resp, 0, error, sizeof(error));
        if (root != NULL && !cJSON_IsArray(root)) {
            snprintf(error, sizeof(error), "GET %s: expected a JSON array", base_path);
            cJSON_Delete(root);
            root = NULL;
        }
        if (root == NULL) {
            nomad_response_free(&resp);
            rc = 0;
            break;
        }
        cJSON_ArrayForEach(item, root) {
            if (fn(ctx, item) != 0) {
                rc = -1;
                break;
            }
        }
        cJSON_Delete(root);
        if (rc == -1 || resp.next_token == NULL || resp.next_token[0] == '\0') {
            nomad_response_free(&resp);
            break;
        }
        /* A server that hands back the token it was given would loop forever. */
        if (token != NULL && strcmp(token, resp.next_token) == 0) {
            snprintf(error, sizeof(error), "GET %s: pagination did not advance (next token %s)", base_path, token);
            nomad_response_free(&resp);
            rc = 0;
            break;
        }
        free(token);
        token = strdup(resp.next_token);
        nomad_response_free(&resp);
        if (token == NULL) {
            rc = -1;
            break;
        }
    }
    free(token);
    if (rc == 0 && add_failed_read(r, base_path, error) != 0)
        return -1;
    return rc;
}

/* Read ReservedResources of a node stub or a full node. Returns 1 when it was there. */
static int read_reserved(struct client_node *n, const cJSON *node)
{
    const cJSON *reserved = cJSON_GetObjectItemCaseSensitive(node, "ReservedResources");
    const cJSON *cpu, *memory;

    if (!cJSON_IsObject(reserved))
        return 0;
    cpu = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(reserved, "Cpu"), "CpuShares");
    memory = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(reserved, "Memory"), "MemoryMB");
    n->reserved_cpu_mhz = cJSON_IsNumber(cpu) ? cpu->valuedouble : 0.0;
    n->reserved_memory_mb = cJSON_IsNumber(memory) ? memory->valuedouble : 0.0;
    n->reserved_known = 1;
    return 1;
}

static int add_node(void *ctx, const cJSON *item)
{
    struct cluster *c = ctx;
    struct client_node *n;

    if (grow((void **)&c->nodes, &c->cap_nodes, c->n_nodes, sizeof(*c->nodes)) != 0)
        return -1;
    n = &c->nodes[c->n_nodes++];
    memset(n, 0, sizeof(*n));
    n->id = dup_or_empty(json_string(item, "ID"));
    n->name = dup_or_empty(json_string(item, "Name"));
    n->address = dup_or_empty(json_string(item, "Address"));
    n->status = dup_or_empty(json_string(item, "Status"));
    n->version = dup_or_empty(json_string(item, "Version"));
    if (n->id == NULL || n->name == NULL || n->address == NULL || n->status == NULL || n->version == NULL)
        return -1;
    read_reserved(n, item);
    return 0;
}

/*
 * Nomad before 1.0 ignores ?resources=true, so a stub without
 * ReservedResources is read in full. Returns -1 only when memory runs out.
 */
static int read_node_details(struct source *src, struct cluster *c, struct doctor_report *r)
{
    size_t next = 0;

    while (next < c->n_nodes) {
        char *paths[DETAIL_BATCH];
        size_t which[DETAIL_BATCH];
        struct nomad_response resps[DETAIL_BATCH];
        size_t n = 0;
        int rc = 0;

        for (; next < c->n_nodes && n < DETAIL_BATCH; next++) {
            char *escaped;

            if (c->nodes[next].reserved_known)
                continue;
            escaped = nomad_escape(c->nodes[next].id);
            paths[n] = escaped != NULL ? format("/v1/node/%s", escaped) : NULL;
            free(escaped);
            if (paths[n] == NULL) {
                for (size_t i = 0; i < n; i++)
                    free(paths[i]);
                return -1;
            }
            which[n++] = next;
        }
        if (n == 0)
            break;
        source_get_many(src, (const char *const *)paths, n, resps);
        for (size_t i = 0; i < n; i++) {
            char error[768] = "";
            cJSON *root = response_json(paths[i], &resps[i], 0, error, sizeof(error));

            if (root != NULL && !read_reserved(&c->nodes[which[i]], root))
                snprintf(error, sizeof(error), "GET %s: no ReservedResources object in the node", paths[i]);
            if (!c->nodes[which[i]].reserved_known) {
                c->failed_node_reads++;
                if (add_failed_read(r, paths[i], error) != 0)
                    rc = -1;
            }
            cJSON_Delete(root);
            nomad_response_free(&resps[i]);
            free(paths[i]);
        }
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* A job to read in full: namespace and ID, from the list. */
struct job_ref {
    char *namespace_name;
    char *id;
};

struct job_list {
    struct job_ref *refs;
    size_t n, cap;
};

static int add_job_ref(void *ctx, const cJSON *item)
{
    struct job_list *jobs = ctx;
    const char *parent = json_string(item, "ParentID");
    struct job_ref *ref;

    /* Periodic and dispatched children copy their parent's groups, so only the parent is checked. */
    if (parent != NULL && parent[0] != '\0')
        return 0;
    if (grow((void **)&jobs->refs, &jobs->cap, jobs->n, sizeof(*jobs->refs)) != 0)
        return -1;
    ref = &jobs->refs[jobs->n];
    ref->namespace_name = dup_or_empty(json_string(item, "Namespace"));
    ref->id = dup_or_empty(json_string(item, "ID"));
    if (ref->namespace_name == NULL || ref->id == NULL) {
        free(ref->namespace_name);
        free(ref->id);
        return -1;
    }
    jobs->n++;
    return 0;
}

/* A duration field in integer nanoseconds: 1 with *seconds set, 0 when null or absent. */
static int duration_field(const cJSON *obj, const char *key, double *seconds)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

    *seconds = 0.0;
    if (!cJSON_IsNumber(v))
        return 0;
    *seconds = v->valuedouble / NS_PER_S;
    return 1;
}

static int add_groups(struct cluster *c, const cJSON *job)
{
    const char *namespace_name = json_string(job, "Namespace");
    const char *job_id = json_string(job, "ID");
    const cJSON *group;

    cJSON_ArrayForEach(group, cJSON_GetObjectItemCaseSensitive(job, "TaskGroups")) {
        const cJSON *disconnect = cJSON_GetObjectItemCaseSensitive(group, "Disconnect");
        const cJSON *replace = cJSON_GetObjectItemCaseSensitive(disconnect, "Replace");
        struct task_group *g;

        if (grow((void **)&c->groups, &c->cap_groups, c->n_groups, sizeof(*c->groups)) != 0)
            return -1;
        g = &c->groups[c->n_groups++];
        memset(g, 0, sizeof(*g));
        g->namespace_name = dup_or_empty(namespace_name);
        g->job = dup_or_empty(job_id);
        g->group = dup_or_empty(json_string(group, "Name"));
        if (g->namespace_name == NULL || g->job == NULL || g->group == NULL)
            return -1;
        duration_field(disconnect, "LostAfter", &g->lost_after_s);
        duration_field(disconnect, "StopOnClientAfter", &g->stop_on_client_after_s);
        g->replace = cJSON_IsBool(replace) ? cJSON_IsTrue(replace) : -1;
        g->has_max_client_disconnect = duration_field(group, "MaxClientDisconnect", &g->max_client_disconnect_s);
        g->has_stop_after_client_disconnect =
            duration_field(group, "StopAfterClientDisconnect", &g->stop_after_client_disconnect_s);
        g->prevent_reschedule_on_lost = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(group, "PreventRescheduleOnLost"));
    }
    c->n_jobs++;
    return 0;
}

/*
 * GET /v1/job/<ID>?namespace=<ns> for every listed job, DETAIL_BATCH at a
 * time. A job deleted since the list (404) is skipped. Returns -1 only when
 * memory runs out.
 */
static int read_job_details(struct source *src, struct cluster *c, struct doctor_report *r,
                            const struct job_list *jobs)
{
    for (size_t start = 0; start < jobs->n; start += DETAIL_BATCH) {
        size_t n = jobs->n - start < DETAIL_BATCH ? jobs->n - start : DETAIL_BATCH;
        char *paths[DETAIL_BATCH];
        struct nomad_response resps[DETAIL_BATCH];
        int rc = 0;

        for (size_t i = 0; i < n; i++) {
            char *id = nomad_escape(jobs->refs[start + i].id);
            char *ns = nomad_escape(jobs->refs[start + i].namespace_name);

            paths[i] = id != NULL && ns != NULL ? format("/v1/job/%s?namespace=%s", id, ns) : NULL;
            free(id);
            free(ns);
            if (paths[i] == NULL) {
                for (size_t k = 0; k < i; k++)
                    free(paths[k]);
                return -1;
            }
        }
        source_get_many(src, (const char *const *)paths, n, resps);
        for (size_t i = 0; i < n; i++) {
            char error[768] = "";
            cJSON *root = NULL;

            if (resps[i].result == NOMAD_ERR_STATUS && resps[i].status == 404) {
                log_debug("doctor", "job %s in namespace %s was deleted after the list; skipped",
                          jobs->refs[start + i].id, jobs->refs[start + i].namespace_name);
            } else {
                root = response_json(paths[i], &resps[i], 0, error, sizeof(error));
                if (root != NULL && !cJSON_IsObject(root)) {
                    snprintf(error, sizeof(error), "GET %s: expected a JSON object", paths[i]);
                    cJSON_Delete(root);
                    root = NULL;
                }
                if (root == NULL) {
                    c->failed_job_reads++;
                    if (add_failed_read(r, paths[i], error) != 0)
                        rc = -1;
                } else if (add_groups(c, root) != 0) {
                    rc = -1;
                }
            }
            cJSON_Delete(root);
            nomad_response_free(&resps[i]);
            free(paths[i]);
        }
        if (rc != 0)
            return -1;
    }
    return 0;
}

static int read_cluster(struct source *src, struct cluster *c, struct doctor_report *r)
{
    struct job_list jobs = {0};
    int rc;

    if (read_singles(src, c, r) != 0)
        return -1;

    rc = read_pages(src, r, read_paths[READ_NODES], add_node, c);
    if (rc < 0)
        return -1;
    c->read_ok[READ_NODES] = rc == 1;
    if (rc == 1 && read_node_details(src, c, r) != 0)
        return -1;

    rc = read_pages(src, r, read_paths[READ_JOBS], add_job_ref, &jobs);
    if (rc >= 0) {
        c->read_ok[READ_JOBS] = rc == 1;
        if (rc == 1 && read_job_details(src, c, r, &jobs) != 0)
            rc = -1;
    }
    for (size_t i = 0; i < jobs.n; i++) {
        free(jobs.refs[i].namespace_name);
        free(jobs.refs[i].id);
    }
    free(jobs.refs);
    return rc < 0 ? -1 : 0;
}

/* ---- heartbeat settings ---- */

/* "a, b, c and 4 more" from names[0..n). */
static void list_names(struct strbuf *sb, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n && i < MAX_NAMES_IN_TEXT; i++)
        sb_printf(sb, "%s%s", i == 0 ? "" : (i + 1 == n ? " and " : ", "), names[i]);
    if (n > MAX_NAMES_IN_TEXT)
        sb_printf(sb, " and %zu more", n - MAX_NAMES_IN_TEXT);
}


/*
 * One heartbeat duration from the agent configuration: integer nanoseconds
 * (Nomad 1.x), or a Go duration string (older agents). Zero, "" and absent
 * mean "not set". Returns 1 when set, 0 when not set, -1 when unreadable.
 */
static int config_duration(const cJSON *v, double *seconds)
{
    if (v == NULL || cJSON_IsNull(v))
        return 0;
    if (cJSON_IsNumber(v)) {
        *seconds = v->valuedouble / NS_PER_S;
        return *seconds > 0 ? 1 : (*seconds == 0 ? 0 : -1);
    }
    if (cJSON_IsString(v)) {
        if (v->valuestring[0] == '\0')
            return 0;
        if (parse_go_duration(v->valuestring, seconds) != 0 || *seconds < 0)
            return -1;
        return *seconds > 0;
    }
    return -1;
}

static int config_rate(const cJSON *v, double *rate)
{
    char *end;

    if (v == NULL || cJSON_IsNull(v))
        return 0;
    if (cJSON_IsNumber(v))
        *rate = v->valuedouble;
    else if (cJSON_IsString(v) && v->valuestring[0] != '\0') {
        *rate = strtod(v->valuestring, &end);
        if (*end != '\0')
            return -1;
    } else if (cJSON_IsString(v))
        return 0;
    else
        return -1;
    return *rate > 0 ? 1 : (*rate == 0 ? 0 : -1);
}

/*
 * Fill r->heartbeat from the agent configuration and the live node count. Returns -1 when memory runs out.
 * NOTE: only the leader's settings apply, but this reads the agent at the Nomad address, which may be a
 * follower configured differently.
 */
static int compute_heartbeat(const struct cluster *c, struct doctor_report *r)
{
    struct doctor_heartbeat *hb = &r->heartbeat;
    struct strbuf why = {0};
    double base;

    if (!c->read_ok[READ_SELF] || !c->read_ok[READ_NODES])
        return 0;
    hb->known = 1;
    hb->grace_s = DEFAULT_HEARTBEAT_GRACE_S;
    hb->min_ttl_s = DEFAULT_MIN_HEARTBEAT_TTL_S;
    hb->max_per_second = DEFAULT_MAX_HEARTBEATS_PER_SECOND;
    if (!c->self_is_server) {
        hb->grace_assumed = hb->min_ttl_assumed = hb->rate_assumed = 1;
        sb_printf(&why, "the agent at the Nomad address is not a server, so /v1/agent/self does not show the "
                        "servers' settings");
    } else {
        static const char *const names[3] = {"HeartbeatGrace", "MinHeartbeatTTL", "MaxHeartbeatsPerSecond"};
        double values[3] = {0.0, 0.0, 0.0};
        const int set[3] = {config_duration(c->grace, &values[0]), config_duration(c->min_ttl, &values[1]),
                            config_rate(c->rate, &values[2])};
        double *const out[3] = {&hb->grace_s, &hb->min_ttl_s, &hb->max_per_second};
        int *const assumed[3] = {&hb->grace_assumed, &hb->min_ttl_assumed, &hb->rate_assumed};
        const char *unset[3], *invalid[3];
        size_t n_unset = 0, n_invalid = 0;

        for (size_t i = 0; i < 3; i++) {
            if (set[i] == 1) {
                *out[i] = values[i];
                continue;
            }
            *assumed[i] = 1;
            if (set[i] == 0)
                unset[n_unset++] = names[i];
            else
                invalid[n_invalid++] = names[i];
        }
        if (n_unset > 0) {
            sb_printf(&why, "config.Server in /v1/agent/self does not set ");
            list_names(&why, unset, n_unset);
        }
        if (n_invalid > 0) {
            sb_printf(&why, "%sconfig.Server in /v1/agent/self has unreadable values for ", why.len ? "; " : "");
            list_names(&why, invalid, n_invalid);
        }
    }
    if (why.len > 0 || why.failed) {
        hb->assumed_because = sb_take(&why);
        if (hb->assumed_because == NULL)
            return -1;
    }

    hb->live_nodes = 0;
    for (size_t i = 0; i < c->n_nodes; i++)
        if (strcmp(c->nodes[i].status, "ready") == 0 || strcmp(c->nodes[i].status, "initializing") == 0)
            hb->live_nodes++;
    base = (double)hb->live_nodes / hb->max_per_second;
    if (base < hb->min_ttl_s)
        base = hb->min_ttl_s;
    hb->ttl_min_s = base;
    hb->ttl_max_s = 2.0 * base;
    hb->down_after_max_s = hb->ttl_max_s + hb->grace_s;
    hb->required_window_s = 2.0 * hb->ttl_max_s + hb->grace_s;
    return 0;
}

/* ---- versions ---- */

struct version {
    int major, minor, patch;
    int prerelease;             /* 1 for "-dev", "-beta.1", "-rc1" and the like */
};

/*
 * Parse "1.9.4", "v1.9.4", "1.9.4-dev", "1.9.4+ent" or "1.9.4-beta.1+ent".
 * Build metadata after '+' is ignored. Returns 0, or -1 for anything else.
 */
static int parse_version(const char *text, struct version *v)
{
    const char *p = text;
    int *parts[3] = {&v->major, &v->minor, &v->patch};

    if (text == NULL)
        return -1;
    if (*p == 'v')
        p++;
    for (int i = 0; i < 3; i++) {
        long value = 0;
        int digits = 0;

        while (isdigit((unsigned char)*p) && digits < 6) {
            value = value * 10 + (*p++ - '0');
            digits++;
        }
        if (digits == 0 || isdigit((unsigned char)*p))
            return -1;
        *parts[i] = (int)value;
        if (i < 2 && *p++ != '.')
            return -1;
    }
    v->prerelease = 0;
    if (*p == '-') {
        if (p[1] == '\0' || p[1] == '+')
            return -1;
        v->prerelease = 1;
        p += strcspn(p, "+");
    }
    if (*p == '+')
        return p[1] != '\0' ? 0 : -1;
    return *p == '\0' ? 0 : -1;
}

/* Order as semantic versions. A pre-release comes before its release, and two pre-releases of one version tie. */
static int compare_versions(const struct version *a, const struct version *b)
{
    if (a->major != b->major)
        return a->major < b->major ? -1 : 1;
    if (a->minor != b->minor)
        return a->minor < b->minor ? -1 : 1;
    if (a->patch != b->patch)
        return a->patch < b->patch ? -1 : 1;
    return b->prerelease - a->prerelease;
}

static int same_line(const struct version *a, const struct version *b)
{
    return a->major == b->major && a->minor == b->minor;
}

static int line_after(const struct version *a, const struct version *b)
{
    return a->major != b->major ? a->major > b->major : a->minor > b->minor;
}

enum { ROLE_SERVER = 1, ROLE_CLIENT = 2 };

/*
 * Known bugs in how Nomad keeps work and service registrations through node
 * loss, with the releases that fixed them on each release line (from
 * Nomad's CHANGELOG). A fix in the newest listed line reaches every later
 * line. A line older than the newest listed one that is not listed itself
 * never got the fix.
 */
static const struct known_bug {
    const char *id;
    unsigned roles;
    struct version since;       /* first affected release */
    struct version fixed[3];
    size_t n_fixed;
    const char *what;
    const char *effect;
} known_bugs[] = {
    {"native_service_leak", ROLE_SERVER | ROLE_CLIENT, {1, 3, 0, 0},
     {{1, 6, 11, 0}, {1, 7, 8, 0}, {1, 8, 0, 0}}, 3,
     "native service registrations outlive their allocations: the client does not retry a failed "
     "deregistration, and the servers do not delete an allocation's registrations when it stops",
     "service discovery keeps returning addresses where nothing listens"},
    {"cni_ipam_persistent", ROLE_CLIENT, {0, 10, 0, 0},
     {{1, 7, 16, 0}, {1, 8, 8, 0}, {1, 9, 4, 0}}, 3,
     "bridge-network IP reservations live in /var/lib/cni/networks, which survives a reboot",
     "after a host crash or reboot the reservations of allocations that no longer run remain, allocations can "
     "fail to restore, and leaked addresses fill the bridge subnet (fixed releases keep them in /var/run/cni, "
     "a tmpfs)"},
    {"node_down_deletes_services", ROLE_SERVER, {1, 3, 0, 0},
     {{1, 8, 16, 0}, {1, 10, 4, 0}, {1, 11, 0, 0}}, 3,
     "marking a node down deletes every native service registration on it, and they are not restored when "
     "the node comes back before its allocations are marked lost",
     "after a heartbeat blip, services that still run vanish from service discovery until their "
     "allocations restart"},
};

#define N_KNOWN_BUGS (sizeof(known_bugs) / sizeof(known_bugs[0]))

static int bug_fixed_in(const struct known_bug *bug, const struct version *v)
{
    const struct version *newest = &bug->fixed[0];

    if (compare_versions(v, &bug->since) < 0)
        return 1;
    for (size_t i = 0; i < bug->n_fixed; i++) {
        if (same_line(v, &bug->fixed[i]))
            return compare_versions(v, &bug->fixed[i]) >= 0;
        if (line_after(&bug->fixed[i], newest))
            newest = &bug->fixed[i];
    }
    return line_after(v, newest);
}

/*
 * The lowest release above v that fixes every known bug of role: the
 * candidates are the fix releases themselves. Returns 0, or -1 when none
 * does (then the operator needs a current release).
 */
static int upgrade_target(unsigned role, const struct version *v, struct version *target)
{
    int found = 0;

    for (size_t b = 0; b < N_KNOWN_BUGS; b++) {
        for (size_t f = 0; f < known_bugs[b].n_fixed; f++) {
            const struct version *candidate = &known_bugs[b].fixed[f];
            int all = 1;

            if (compare_versions(candidate, v) <= 0 || (found && compare_versions(candidate, target) >= 0))
                continue;
            for (size_t k = 0; k < N_KNOWN_BUGS && all; k++)
                if ((known_bugs[k].roles & role) && !bug_fixed_in(&known_bugs[k], candidate))
                    all = 0;
            if (all) {
                *target = *candidate;
                found = 1;
            }
        }
    }
    return found ? 0 : -1;
}

static void version_text(const struct version *v, char *buf, size_t bufsz)
{
    snprintf(buf, bufsz, "%d.%d.%d", v->major, v->minor, v->patch);
}

/* ---- checks ---- */

static const char *node_label(const struct client_node *n)
{
    return n->name[0] != '\0' ? n->name : n->id;
}

static int check_colocated(const struct cluster *c, struct doctor_report *r, struct doctor_check *check)
{
    for (size_t i = 0; i < c->n_nodes; i++) {
        const struct client_node *n = &c->nodes[i];

        for (size_t k = 0; k < c->n_servers; k++) {
            const struct server_member *s = &c->servers[k];
            size_t host_len = strcspn(s->rpc_addr, ":");
            cJSON *evidence;

            if (n->address[0] == '\0' ||
                (strcmp(n->address, s->addr) != 0 &&
                 !(strlen(n->address) == host_len && strncmp(n->address, s->rpc_addr, host_len) == 0)))
                continue;
            evidence = cJSON_CreateObject();
            cJSON_AddStringToObject(evidence, "node_id", n->id);
            cJSON_AddStringToObject(evidence, "node_name", n->name);
            cJSON_AddStringToObject(evidence, "address", n->address);
            cJSON_AddStringToObject(evidence, "server", s->name);
            cJSON_AddStringToObject(evidence, "server_rpc_addr", s->rpc_addr);
            if (add_finding(r, check, DOCTOR_WARNING, strdup(node_label(n)),
                            format("client %s (node %s) has address %s, which is also the address of server %s",
                                   node_label(n), n->id, n->address, s->name),
                            strdup("The client's tasks compete with the server for CPU, memory and disk I/O. A task "
                                   "that exhausts memory or I/O delays Raft and heartbeat processing for the whole "
                                   "cluster, so every client can miss heartbeats at once, and restarting or draining "
                                   "this host also takes a server away."),
                            format("Run the client on a host without a Nomad server. Until then, set client { "
                                   "reserved { cpu, memory } } on %s large enough for the server process.",
                                   node_label(n)),
                            evidence) != 0)
                return -1;
            break;
        }
    }
    return 0;
}

static int check_reserved(const struct cluster *c, struct doctor_report *r, struct doctor_check *check)
{
    struct strbuf observed = {0};
    const char **names = NULL;
    cJSON *evidence, *nodes;
    size_t n_missing = 0;
    int rc = -1;

    evidence = cJSON_CreateObject();
    nodes = cJSON_AddArrayToObject(evidence, "nodes");
    cJSON_AddBoolToObject(evidence, "memory_oversubscription", c->oversubscription);
    names = calloc(c->n_nodes ? c->n_nodes : 1, sizeof(*names));
    if (evidence == NULL || nodes == NULL || names == NULL)
        goto out;
    for (size_t i = 0; i < c->n_nodes; i++) {
        const struct client_node *n = &c->nodes[i];
        int no_cpu = n->reserved_known && n->reserved_cpu_mhz <= 0;
        int no_memory = n->reserved_known && n->reserved_memory_mb <= 0;
        cJSON *o;

        if (!no_cpu && !no_memory)
            continue;
        o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "node_id", n->id);
        cJSON_AddStringToObject(o, "node_name", n->name);
        cJSON_AddNumberToObject(o, "reserved_cpu_mhz", n->reserved_cpu_mhz);
        cJSON_AddNumberToObject(o, "reserved_memory_mb", n->reserved_memory_mb);
        cJSON_AddItemToArray(nodes, o);
        names[n_missing] = node_label(n);
        sb_printf(&observed, "%s%s (%s)", n_missing == 0 ? "" : ", ", node_label(n),
                  no_cpu && no_memory ? "no CPU and no memory" : (no_cpu ? "no CPU" : "no memory"));
        n_missing++;
    }
    if (n_missing == 0) {
        rc = 0;
        goto out;
    }
    {
        struct strbuf text = {0};
        struct strbuf subject = {0};
        char *listed = sb_take(&observed);

        sb_printf(&text, "%zu of %zu clients reserve nothing for the host in one or both resources: %s.", n_missing,
                  c->n_nodes, listed != NULL ? listed : "");
        free(listed);
        if (c->oversubscription)
            sb_printf(&text, " Memory oversubscription is enabled in the scheduler configuration.");
        list_names(&subject, names, n_missing);
        rc = add_finding(
            r, check, c->oversubscription ? DOCTOR_CRITICAL : DOCTOR_WARNING, sb_take(&subject), sb_take(&text),
            c->oversubscription
                ? strdup("Without reserved resources the scheduler may hand all of a client's CPU and memory to "
                         "tasks, leaving none for the operating system, the Nomad agent and the task drivers. With "
                         "memory oversubscription, tasks that set memory_max can use more memory than they "
                         "reserved, so the host runs out of memory sooner; the kernel's OOM killer can then end "
                         "the agent, and the node misses its heartbeats and goes down.")
                : strdup("Without reserved resources the scheduler may hand all of a client's CPU and memory to "
                         "tasks, leaving none for the operating system, the Nomad agent and the task drivers. "
                         "Under memory pressure the kernel's OOM killer can end the agent, and the node misses "
                         "its heartbeats and goes down."),
            strdup("Reserve CPU (MHz) and memory (MB) for the operating system, the agent and the task drivers in "
                   "the agent configuration of these clients, sized for each host, then restart their agents:\n"
                   "client {\n"
                   "  reserved {\n"
                   "    cpu    = 500\n"
                   "    memory = 512\n"
                   "  }\n"
                   "}"),
            evidence);
        evidence = NULL;
    }

out:
    free(observed.text);
    free(names);
    cJSON_Delete(evidence);
    return rc;
}

/* Names of the server members, for text and evidence. */
static void server_names(const struct cluster *c, struct strbuf *sb, cJSON *array)
{
    const char **names = calloc(c->n_servers ? c->n_servers : 1, sizeof(*names));

    if (names == NULL) {
        sb->failed = 1;
        return;
    }
    for (size_t i = 0; i < c->n_servers; i++) {
        names[i] = c->servers[i].name;
        cJSON_AddItemToArray(array, cJSON_CreateString(c->servers[i].name));
    }
    list_names(sb, names, c->n_servers);
    free(names);
}

static int check_server_count(const struct cluster *c, struct doctor_report *r, struct doctor_check *too_few,
                              struct doctor_check *even)
{
    size_t n = c->n_servers;
    struct strbuf observed = {0};
    cJSON *evidence;
    cJSON *names;

    if (n >= 3 && n % 2 == 1)
        return 0;
    evidence = cJSON_CreateObject();
    cJSON_AddNumberToObject(evidence, "servers", (double)n);
    names = cJSON_AddArrayToObject(evidence, "names");
    if (n == 0) {
        sb_printf(&observed, "/v1/agent/members lists no Nomad servers");
    } else {
        sb_printf(&observed, "the cluster has %zu server%s: ", n, n == 1 ? "" : "s");
        server_names(c, &observed, names);
    }
    if (n < 3)
        return add_finding(r, too_few, DOCTOR_CRITICAL, strdup("cluster"), sb_take(&observed),
                           format("Raft needs a majority of the servers to elect a leader, and only the leader "
                                  "processes heartbeats and schedules work. With %zu server%s, losing %s stops "
                                  "both, and every client is marked down when its heartbeats go unanswered%s.",
                                  n, n == 1 ? "" : "s", n == 1 ? "it" : "either one",
                                  n == 2 ? "; two servers are less available than one" : ""),
                           strdup("Run three servers (five to survive two failures) on separate hosts, with "
                                  "server { bootstrap_expect } set to that number."),
                           evidence);
    return add_finding(r, even, DOCTOR_WARNING, strdup("cluster"), sb_take(&observed),
                       format("%zu servers tolerate the loss of %zu, the same as %zu: the extra server adds "
                              "replication work but no fault tolerance, and a network split into two equal halves "
                              "leaves neither side with a majority.",
                              n, (n - 1) / 2, n - 1),
                       format("Run %zu or %zu servers, with server { bootstrap_expect } set to that number.", n - 1,
                              n + 1),
                       evidence);
}

static int in_raft(const struct cluster *c, const struct server_member *s)
{
    for (size_t i = 0; i < c->n_peers; i++) {
        const struct raft_peer *p = &c->peers[i];

        if ((s->id[0] != '\0' && strcmp(p->id, s->id) == 0) || strcmp(p->address, s->rpc_addr) == 0 ||
            (s->name[0] != '\0' && strcmp(p->node, s->name) == 0))
            return 1;
    }
    return 0;
}

static int check_raft(const struct cluster *c, struct doctor_report *r, struct doctor_check *check)
{
    for (size_t i = 0; i < c->n_servers; i++) {
        const struct server_member *s = &c->servers[i];
        cJSON *evidence, *peers;

        /* Autopilot may remove a failed server from Raft on purpose, so only live ones must be there. */
        if (strcmp(s->status, "alive") != 0 || in_raft(c, s))
            continue;
        evidence = cJSON_CreateObject();
        cJSON_AddStringToObject(evidence, "server", s->name);
        cJSON_AddStringToObject(evidence, "rpc_addr", s->rpc_addr);
        cJSON_AddStringToObject(evidence, "id", s->id);
        peers = cJSON_AddArrayToObject(evidence, "raft_peers");
        for (size_t k = 0; k < c->n_peers; k++)
            cJSON_AddItemToArray(peers, cJSON_CreateString(c->peers[k].address));
        if (add_finding(r, check, DOCTOR_CRITICAL, strdup(s->name),
                        format("server %s (%s) is alive in gossip but not in the Raft configuration, which lists "
                               "%zu server%s",
                               s->name, s->rpc_addr, c->n_peers, c->n_peers == 1 ? "" : "s"),
                        strdup("A server outside Raft neither votes nor keeps a copy of the cluster state, so the "
                               "cluster tolerates fewer server failures than its server count suggests, and a "
                               "leader election after one more failure can leave clients unanswered until they "
                               "are marked down."),
                        format("Read %s's log for Raft join errors and check that it reaches the other servers on "
                               "the RPC port. A server removed with `nomad operator raft remove-peer` joins again "
                               "when its agent restarts; one that still does not join needs its data directory's "
                               "server/raft folder moved aside before the restart, so it joins as a new server.",
                               s->name),
                        evidence) != 0)
            return -1;
    }
    return 0;
}

static int check_autopilot(const struct cluster *c, struct doctor_report *r, struct doctor_check *check)
{
    struct strbuf observed = {0};
    cJSON *evidence, *servers;
    size_t unhealthy = 0;

    for (size_t i = 0; i < c->n_autopilot; i++)
        unhealthy += !c->autopilot[i].healthy;
    if (c->autopilot_healthy && unhealthy == 0)
        return 0;
    evidence = cJSON_CreateObject();
    cJSON_AddBoolToObject(evidence, "healthy", c->autopilot_healthy);
    if (c->failure_tolerance >= 0)
        cJSON_AddNumberToObject(evidence, "failure_tolerance", c->failure_tolerance);
    servers = cJSON_AddArrayToObject(evidence, "unhealthy_servers");
    sb_printf(&observed, "autopilot reports the servers %s", c->autopilot_healthy ? "healthy" : "unhealthy");
    if (c->failure_tolerance >= 0)
        sb_printf(&observed, " with a failure tolerance of %.0f", c->failure_tolerance);
    for (size_t i = 0, shown = 0; i < c->n_autopilot; i++) {
        const struct autopilot_server *a = &c->autopilot[i];
        cJSON *o;

        if (a->healthy)
            continue;
        o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", a->name);
        cJSON_AddStringToObject(o, "address", a->address);
        cJSON_AddStringToObject(o, "serf_status", a->serf_status);
        cJSON_AddStringToObject(o, "last_contact", a->last_contact);
        cJSON_AddItemToArray(servers, o);
        sb_printf(&observed, "%s%s (gossip status %s, last contact with the leader %s ago)",
                  shown == 0 ? "; unhealthy: " : ", ", a->name, a->serf_status,
                  a->last_contact[0] ? a->last_contact : "unknown");
        shown++;
    }
    return add_finding(r, check, DOCTOR_CRITICAL, strdup("cluster"), sb_take(&observed),
                       strdup("An unhealthy server has fallen behind the leader's Raft log or lost contact with it. "
                              "The cluster tolerates fewer failures, and if the leader is lost while servers are "
                              "unhealthy, the election can take long enough that clients miss their heartbeats and "
                              "are marked down together."),
                       strdup("On each unhealthy server, check that the agent runs, reaches the leader on the RPC "
                              "port (4647 by default), and has CPU and disk I/O to spare; `nomad server members` "
                              "and the server's log show why it lags. Fix those servers before restarting or "
                              "upgrading any other server."),
                       evidence);
}

static char *group_subject(const struct task_group *g)
{
    return format("job %s (namespace %s), group %s", g->job, g->namespace_name, g->group);
}

static cJSON *group_evidence(const struct task_group *g)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "namespace", g->namespace_name);
    cJSON_AddStringToObject(o, "job", g->job);
    cJSON_AddStringToObject(o, "group", g->group);
    return o;
}

static int check_stops(const struct cluster *c, const struct doctor_heartbeat *hb, struct doctor_report *r,
                       struct doctor_check *check)
{
    for (size_t i = 0; i < c->n_groups; i++) {
        const struct task_group *g = &c->groups[i];
        double window = g->stop_on_client_after_s > 0 ? g->stop_on_client_after_s : g->stop_after_client_disconnect_s;
        const char *field = g->stop_on_client_after_s > 0 ? "disconnect { stop_on_client_after }"
                                                          : "stop_after_client_disconnect";
        double suggested = 300.0;
        char when[32], lost[32];
        cJSON *evidence;

        if (window <= 0)
            continue;
        if (hb->known && hb->required_window_s > suggested)
            suggested = ceil(hb->required_window_s / 60.0) * 60.0;
        if (window > suggested)
            suggested = window;
        doctor_format_duration(window, when, sizeof(when));
        doctor_format_duration(suggested, lost, sizeof(lost));
        evidence = group_evidence(g);
        cJSON_AddStringToObject(evidence, "field", g->stop_on_client_after_s > 0 ? "stop_on_client_after"
                                                                                 : "stop_after_client_disconnect");
        cJSON_AddNumberToObject(evidence, "seconds", window);
        if (add_finding(r, check, DOCTOR_WARNING, group_subject(g),
                        format("%s sets %s = \"%s\": its client stops the allocations after %s without contact "
                               "with the servers",
                               g->group, field, when, when),
                        strdup("The client kills tasks that are running fine whenever it cannot reach the servers "
                               "for that long: a leader election, a server restart or a network blip is enough. The "
                               "work then stays down until the client reconnects and the scheduler places it again. "
                               "disconnect { lost_after } instead keeps the tasks running and lets the servers "
                               "decide when the allocation counts as lost."),
                        format("Unless this work must never run without the servers (for example, it holds a lock), "
                               "replace %s in group \"%s\" with this block and submit the job again:\n"
                               "disconnect {\n"
                               "  lost_after = \"%s\"\n"
                               "  replace    = true\n"
                               "  reconcile  = \"best_score\"\n"
                               "}",
                               field, g->group, lost),
                        evidence) != 0)
            return -1;
    }
    return 0;
}

static int check_deprecated(const struct cluster *c, struct doctor_report *r, struct doctor_check *check)
{
    const struct version ignored_from = {1, 10, 0, 0};
    struct version newest = {0, 0, 0, 0};
    int servers_known = 0;
    char newest_text[32] = "";

    if (c->read_ok[READ_MEMBERS]) {
        for (size_t i = 0; i < c->n_servers; i++) {
            struct version v;

            if (parse_version(c->servers[i].version, &v) != 0)
                continue;
            if (!servers_known || compare_versions(&v, &newest) > 0) {
                newest = v;
                snprintf(newest_text, sizeof(newest_text), "%s", c->servers[i].version);
            }
            servers_known = 1;
        }
    }
    for (size_t i = 0; i < c->n_groups; i++) {
        const struct task_group *g = &c->groups[i];
        struct strbuf observed = {0}, block = {0};
        char settings[3][96];
        const char *listed[3];
        size_t n_listed = 0;
        enum doctor_severity severity;
        int covered = 1;
        char when[32];
        cJSON *evidence, *fields;

        if (!g->has_max_client_disconnect && !g->has_stop_after_client_disconnect && !g->prevent_reschedule_on_lost)
            continue;
        evidence = group_evidence(g);
        fields = cJSON_AddArrayToObject(evidence, "fields");
        if (g->has_max_client_disconnect) {
            doctor_format_duration(g->max_client_disconnect_s, when, sizeof(when));
            snprintf(settings[n_listed], sizeof(settings[n_listed]), "max_client_disconnect = \"%s\"", when);
            listed[n_listed] = settings[n_listed];
            n_listed++;
            sb_printf(&block, "  lost_after = \"%s\"", when);
            cJSON_AddItemToArray(fields, cJSON_CreateString("max_client_disconnect"));
            covered &= g->lost_after_s > 0;
        }
        if (g->has_stop_after_client_disconnect) {
            doctor_format_duration(g->stop_after_client_disconnect_s, when, sizeof(when));
            snprintf(settings[n_listed], sizeof(settings[n_listed]), "stop_after_client_disconnect = \"%s\"", when);
            listed[n_listed] = settings[n_listed];
            n_listed++;
            sb_printf(&block, "%s  stop_on_client_after = \"%s\"", block.len ? "\n" : "", when);
            cJSON_AddItemToArray(fields, cJSON_CreateString("stop_after_client_disconnect"));
            covered &= g->stop_on_client_after_s > 0;
        }
        if (g->prevent_reschedule_on_lost) {
            listed[n_listed++] = "prevent_reschedule_on_lost = true";
            sb_printf(&block, "%s  replace = false", block.len ? "\n" : "");
            cJSON_AddItemToArray(fields, cJSON_CreateString("prevent_reschedule_on_lost"));
            covered &= g->replace == 0;
        }
        cJSON_AddBoolToObject(evidence, "disconnect_block_has_replacement", covered);
        if (servers_known)
            cJSON_AddStringToObject(evidence, "newest_server_version", newest_text);

        if (covered)
            severity = DOCTOR_INFO;
        else if (servers_known && compare_versions(&newest, &ignored_from) >= 0)
            severity = DOCTOR_CRITICAL;
        else
            severity = DOCTOR_WARNING;
        sb_printf(&observed, "%s sets the deprecated ", g->group);
        list_names(&observed, listed, n_listed);
        if (covered)
            sb_printf(&observed, "; its disconnect block already holds the replacement");
        else if (severity == DOCTOR_CRITICAL)
            sb_printf(&observed, "; the servers run Nomad %s, which ignores them", newest_text);
        if (add_finding(r, check, severity, group_subject(g), sb_take(&observed),
                        covered ? strdup("Nomad 1.10 and later ignore these fields. The disconnect block already "
                                         "carries the same settings, so nothing changes today, but the job file "
                                         "states them twice and the deprecated lines mislead whoever edits it next.")
                                : strdup("These fields are deprecated since Nomad 1.8 and ignored from 1.10 on: a "
                                         "1.10 or later server runs this group as if they were not set, so its "
                                         "allocations are marked lost and replaced at the first missed heartbeat "
                                         "instead of riding it out."),
                        covered ? format("Delete the deprecated lines from group \"%s\" in the job file; its "
                                         "disconnect block already sets:\ndisconnect {\n%s\n}",
                                         g->group, block.text != NULL ? block.text : "")
                                : format("In the job file, replace them with a disconnect block in group \"%s\" "
                                         "and submit the job again:\ndisconnect {\n%s\n}",
                                         g->group, block.text != NULL ? block.text : ""),
                        evidence) != 0) {
            free(block.text);
            return -1;
        }
        free(block.text);
    }
    return 0;
}

/* Agents of one role that report the same version string. */
struct version_group {
    unsigned role;
    const char *version;        /* borrowed from the cluster */
    const char **names;
    size_t n, cap;
};

static int add_to_version_group(struct version_group **groups, size_t *n, size_t *cap, unsigned role,
                                const char *version, const char *name)
{
    struct version_group *g = NULL;

    for (size_t i = 0; i < *n; i++)
        if ((*groups)[i].role == role && strcmp((*groups)[i].version, version) == 0)
            g = &(*groups)[i];
    if (g == NULL) {
        if (grow((void **)groups, cap, *n, sizeof(**groups)) != 0)
            return -1;
        g = &(*groups)[(*n)++];
        memset(g, 0, sizeof(*g));
        g->role = role;
        g->version = version;
    }
    if (grow((void **)&g->names, &g->cap, g->n, sizeof(*g->names)) != 0)
        return -1;
    g->names[g->n++] = name;
    return 0;
}

static int version_bug_finding(const struct version_group *g, struct doctor_report *r, struct doctor_check *check)
{
    const char *role_name = g->role == ROLE_SERVER ? "server" : "client";
    struct strbuf observed = {0}, impact = {0}, subject = {0};
    struct version v, target;
    char target_text[32];
    size_t n_bugs = 0;
    cJSON *evidence, *bugs, *agents;
    char *fix;

    if (parse_version(g->version, &v) != 0)
        return 0;
    evidence = cJSON_CreateObject();
    cJSON_AddStringToObject(evidence, "role", role_name);
    cJSON_AddStringToObject(evidence, "version", g->version);
    agents = cJSON_AddArrayToObject(evidence, "agents");
    bugs = cJSON_AddArrayToObject(evidence, "bugs");
    for (size_t i = 0; i < g->n; i++)
        cJSON_AddItemToArray(agents, cJSON_CreateString(g->names[i]));
    for (size_t b = 0; b < N_KNOWN_BUGS; b++) {
        const struct known_bug *bug = &known_bugs[b];
        cJSON *o, *fixed;

        if (!(bug->roles & g->role) || bug_fixed_in(bug, &v))
            continue;
        o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", bug->id);
        fixed = cJSON_AddArrayToObject(o, "fixed_in");
        sb_printf(&impact, "%s(%zu) %s. As a result, %s. ", n_bugs == 0 ? "" : " ", n_bugs + 1, bug->what,
                  bug->effect);
        for (size_t f = 0; f < bug->n_fixed; f++) {
            char text[32];

            if (!same_line(&v, &bug->fixed[f]))
                continue;
            version_text(&bug->fixed[f], text, sizeof(text));
            cJSON_AddStringToObject(o, "fixed_on_this_line", text);
            sb_printf(&impact, "The %d.%d line has the fix from %s", v.major, v.minor, text);
        }
        if (cJSON_GetObjectItemCaseSensitive(o, "fixed_on_this_line") == NULL) {
            cJSON_AddNullToObject(o, "fixed_on_this_line");
            sb_printf(&impact, "No %d.%d release has the fix", v.major, v.minor);
        }
        sb_printf(&impact, " (fixed in ");
        for (size_t f = 0; f < bug->n_fixed; f++) {
            char text[32];

            version_text(&bug->fixed[f], text, sizeof(text));
            cJSON_AddItemToArray(fixed, cJSON_CreateString(text));
            sb_printf(&impact, "%s%s", f == 0 ? "" : (f + 1 == bug->n_fixed ? " and " : ", "), text);
        }
        sb_printf(&impact, ").");
        cJSON_AddItemToArray(bugs, o);
        n_bugs++;
    }
    if (n_bugs == 0) {
        cJSON_Delete(evidence);
        free(impact.text);
        return 0;
    }
    sb_printf(&subject, "%ss on %s", role_name, g->version);
    list_names(&observed, g->names, g->n);
    sb_printf(&observed, " %s Nomad %s", g->n == 1 ? "runs" : "run", g->version);
    if (v.prerelease) {
        char release[32];

        version_text(&v, release, sizeof(release));
        sb_printf(&observed, ", a pre-release build that the doctor counts as older than %s", release);
    }
    if (upgrade_target(g->role, &v, &target) == 0) {
        version_text(&target, target_text, sizeof(target_text));
        cJSON_AddStringToObject(evidence, "upgrade_to", target_text);
        fix = format("Upgrade the %ss to %s or later, the first release above %s with every fix%s.", role_name,
                     target_text, g->version,
                     g->role == ROLE_SERVER ? "; upgrade one server at a time and the leader last" : "");
    } else {
        fix = format("Upgrade the %ss to a current Nomad release.", role_name);
    }
    return add_finding(r, check, DOCTOR_WARNING, sb_take(&subject), sb_take(&observed), sb_take(&impact), fix,
                       evidence);
}

static int version_unknown_finding(const struct version_group *groups, size_t n_groups, unsigned role,
                                   struct doctor_report *r, struct doctor_check *check)
{
    const char *role_name = role == ROLE_SERVER ? "server" : "client";
    struct strbuf observed = {0};
    cJSON *evidence = NULL, *agents = NULL;
    size_t n = 0;
    struct version v;

    for (size_t i = 0; i < n_groups; i++) {
        const struct version_group *g = &groups[i];

        if (g->role != role || parse_version(g->version, &v) == 0)
            continue;
        if (evidence == NULL) {
            evidence = cJSON_CreateObject();
            cJSON_AddStringToObject(evidence, "role", role_name);
            agents = cJSON_AddArrayToObject(evidence, "agents");
        }
        for (size_t k = 0; k < g->n; k++) {
            cJSON *o = cJSON_CreateObject();

            cJSON_AddStringToObject(o, "name", g->names[k]);
            cJSON_AddStringToObject(o, "version", g->version);
            cJSON_AddItemToArray(agents, o);
        }
        sb_printf(&observed, "%s", n == 0 ? "" : "; ");
        list_names(&observed, g->names, g->n);
        if (g->version[0] == '\0')
            sb_printf(&observed, " %s no version", g->n == 1 ? "reports" : "report");
        else
            sb_printf(&observed, " %s version \"%s\"", g->n == 1 ? "reports" : "report", g->version);
        n += g->n;
    }
    if (n == 0)
        return 0;
    return add_finding(r, check, DOCTOR_INFO, format("%ss with an unreadable version", role_name),
                       sb_take(&observed),
                       format("The doctor cannot tell whether the known bugs in native service registrations%s "
                              "and heartbeat handling apply to these %ss.",
                              role == ROLE_CLIENT ? ", bridge-network IP reservations" : "", role_name),
                       format("Check which Nomad binary these %ss run (`nomad version` on the host) and that it is "
                              "a released build.",
                              role_name),
                       evidence);
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int check_versions(const struct cluster *c, struct doctor_report *r, struct doctor_check *bug_check,
                          struct doctor_check *unknown_check)
{
    struct version_group *groups = NULL;
    size_t n = 0, cap = 0;
    int rc = -1;

    for (size_t i = 0; i < c->n_servers; i++)
        if (add_to_version_group(&groups, &n, &cap, ROLE_SERVER, c->servers[i].version, c->servers[i].name) != 0)
            goto out;
    for (size_t i = 0; i < c->n_nodes; i++)
        if (add_to_version_group(&groups, &n, &cap, ROLE_CLIENT, c->nodes[i].version, node_label(&c->nodes[i])) != 0)
            goto out;
    for (size_t i = 0; i < n; i++) {
        qsort(groups[i].names, groups[i].n, sizeof(*groups[i].names), compare_names);
        if (version_bug_finding(&groups[i], r, bug_check) != 0)
            goto out;
    }
    if (version_unknown_finding(groups, n, ROLE_SERVER, r, unknown_check) != 0 ||
        version_unknown_finding(groups, n, ROLE_CLIENT, r, unknown_check) != 0)
        goto out;
    rc = 0;

out:
    for (size_t i = 0; i < n; i++)
        free(groups[i].names);
    free(groups);
    return rc;
}

static int check_windows(const struct cluster *c, const struct doctor_heartbeat *hb, struct doctor_report *r,
                         struct doctor_check *check)
{
    char need[32], ttl_max[32], grace[32], suggested[32], down_after[32];

    doctor_format_duration(hb->required_window_s, need, sizeof(need));
    doctor_format_duration(hb->down_after_max_s, down_after, sizeof(down_after));
    doctor_format_duration(hb->ttl_max_s, ttl_max, sizeof(ttl_max));
    doctor_format_duration(hb->grace_s, grace, sizeof(grace));
    doctor_format_duration(ceil(hb->required_window_s / 60.0) * 60.0, suggested, sizeof(suggested));
    for (size_t i = 0; i < c->n_groups; i++) {
        const struct task_group *g = &c->groups[i];
        const struct {
            const char *field;
            double seconds;
        } windows[] = {
            {"disconnect { lost_after }", g->lost_after_s},
            {"disconnect { stop_on_client_after }", g->stop_on_client_after_s},
            {"max_client_disconnect", g->max_client_disconnect_s},
            {"stop_after_client_disconnect", g->stop_after_client_disconnect_s},
        };
        struct strbuf observed = {0};
        cJSON *evidence = NULL, *short_fields = NULL;

        for (size_t k = 0; k < sizeof(windows) / sizeof(windows[0]); k++) {
            char when[32];
            cJSON *o;

            if (windows[k].seconds <= 0 || windows[k].seconds >= hb->required_window_s)
                continue;
            if (evidence == NULL) {
                evidence = group_evidence(g);
                cJSON_AddNumberToObject(evidence, "required_window_s", hb->required_window_s);
                short_fields = cJSON_AddArrayToObject(evidence, "windows");
            }
            doctor_format_duration(windows[k].seconds, when, sizeof(when));
            o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "field", windows[k].field);
            cJSON_AddNumberToObject(o, "seconds", windows[k].seconds);
            cJSON_AddItemToArray(short_fields, o);
            sb_printf(&observed, "%s%s = \"%s\"", observed.len ? ", " : "", windows[k].field, when);
        }
        if (evidence == NULL)
            continue;
        {
            char *listed = sb_take(&observed);

            sb_printf(&observed,
                      "%s sets %s, shorter than %s: two worst-case heartbeat TTLs (%s each for %ld live nodes) "
                      "plus heartbeat_grace (%s)",
                      g->group, listed != NULL ? listed : "", need, ttl_max, hb->live_nodes, grace);
            free(listed);
        }
        if (add_finding(r, check, DOCTOR_WARNING, group_subject(g), sb_take(&observed),
                        format("The servers mark a client down or disconnected up to %s after its last heartbeat, "
                               "and a client that missed one heartbeat sends the next up to one TTL later. A window "
                               "shorter than %s can run out during a blip that costs a single heartbeat, so the "
                               "allocations are stopped or replaced although the client recovers on its own.",
                               down_after, need),
                        format("Set the window to at least %s (for example disconnect { lost_after = \"%s\" }) and "
                               "submit the job again. The required window grows with the cluster once more than "
                               "%.0f nodes (max_heartbeats_per_second x min_heartbeat_ttl) are live.",
                               need, suggested, hb->max_per_second * hb->min_ttl_s),
                        evidence) != 0)
            return -1;
    }
    return 0;
}

/* ---- running the checks ---- */

/*
 * Mark check as not run when any read in needed failed. Returns 1 when it
 * may run, 0 when not, -1 when memory runs out.
 */
static int require(const struct cluster *c, struct doctor_check *check, const enum read_id *needed, size_t n)
{
    struct strbuf why = {0};

    for (size_t i = 0; i < n; i++)
        if (!c->read_ok[needed[i]])
            sb_printf(&why, "%sGET %s failed", why.len ? ", " : "", read_paths[needed[i]]);
    if (why.len == 0 && !why.failed) {
        check->ran = 1;
        check->complete = 1;
        return 1;
    }
    check->note = sb_take(&why);
    return check->note != NULL ? 0 : -1;
}

/* Record that check ran without part of its input. */
static int incomplete(struct doctor_check *check, size_t failed, const char *what)
{
    if (failed == 0)
        return 0;
    check->complete = 0;
    check->note = format("%zu %s read%s failed, so %s not checked", failed, what, failed == 1 ? "" : "s",
                         failed == 1 ? "that one was" : "those were");
    return check->note != NULL ? 0 : -1;
}

#define REQUIRE(check, ...)                                                                     \
    require(c, (check), (const enum read_id[]){__VA_ARGS__},                                    \
            sizeof((const enum read_id[]){__VA_ARGS__}) / sizeof(enum read_id))

static int run_checks(const struct cluster *c, struct doctor_report *r)
{
    struct doctor_check *k = r->checks;
    int ok;

    if ((ok = REQUIRE(&k[CHECK_COLOCATED], READ_MEMBERS, READ_NODES)) < 0 ||
        (ok && check_colocated(c, r, &k[CHECK_COLOCATED]) != 0))
        return -1;
    if ((ok = REQUIRE(&k[CHECK_RESERVED], READ_NODES, READ_SCHEDULER)) < 0 ||
        (ok && (check_reserved(c, r, &k[CHECK_RESERVED]) != 0 ||
                incomplete(&k[CHECK_RESERVED], c->failed_node_reads, "node") != 0)))
        return -1;
    if ((ok = REQUIRE(&k[CHECK_TOO_FEW], READ_MEMBERS)) < 0 || REQUIRE(&k[CHECK_EVEN], READ_MEMBERS) < 0 ||
        (ok && check_server_count(c, r, &k[CHECK_TOO_FEW], &k[CHECK_EVEN]) != 0))
        return -1;
    if ((ok = REQUIRE(&k[CHECK_RAFT], READ_MEMBERS, READ_RAFT)) < 0 || (ok && check_raft(c, r, &k[CHECK_RAFT]) != 0))
        return -1;
    if ((ok = REQUIRE(&k[CHECK_AUTOPILOT], READ_AUTOPILOT)) < 0 ||
        (ok && check_autopilot(c, r, &k[CHECK_AUTOPILOT]) != 0))
        return -1;
    if ((ok = REQUIRE(&k[CHECK_STOPS], READ_JOBS)) < 0 ||
        (ok && (check_stops(c, &r->heartbeat, r, &k[CHECK_STOPS]) != 0 ||
                incomplete(&k[CHECK_STOPS], c->failed_job_reads, "job") != 0)))
        return -1;
    if ((ok = REQUIRE(&k[CHECK_DEPRECATED], READ_JOBS)) < 0 ||
        (ok && (check_deprecated(c, r, &k[CHECK_DEPRECATED]) != 0 ||
                incomplete(&k[CHECK_DEPRECATED], c->failed_job_reads, "job") != 0)))
        return -1;
    if ((ok = REQUIRE(&k[CHECK_VERSION_BUG], READ_MEMBERS, READ_NODES)) < 0 ||
        REQUIRE(&k[CHECK_VERSION_UNKNOWN], READ_MEMBERS, READ_NODES) < 0 ||
        (ok && check_versions(c, r, &k[CHECK_VERSION_BUG], &k[CHECK_VERSION_UNKNOWN]) != 0))
        return -1;
    if ((ok = REQUIRE(&k[CHECK_WINDOW], READ_JOBS, READ_SELF, READ_NODES)) < 0 ||
        (ok && (check_windows(c, &r->heartbeat, r, &k[CHECK_WINDOW]) != 0 ||
                incomplete(&k[CHECK_WINDOW], c->failed_job_reads, "job") != 0)))
        return -1;
    return 0;
}

int doctor_run(struct source *src, struct doctor_report *report, char *err, size_t errsz)
{
    struct cluster c;
    int rc = -1;

    memset(report, 0, sizeof(*report));
    memset(&c, 0, sizeof(c));
    c.failure_tolerance = -1.0;
    report->servers = report->clients = report->jobs = report->task_groups = -1;
    for (size_t i = 0; i < DOCTOR_N_CHECKS; i++) {
        report->checks[i].id = check_table[i].id;
        report->checks[i].title = check_table[i].title;
    }

    if (read_cluster(src, &c, report) != 0)
        goto out;
    if (c.read_ok[READ_MEMBERS])
        report->servers = (long)c.n_servers;
    if (c.read_ok[READ_NODES])
        report->clients = (long)c.n_nodes;
    if (c.read_ok[READ_JOBS]) {
        report->jobs = (long)c.n_jobs;
        report->task_groups = (long)c.n_groups;
    }
    if (compute_heartbeat(&c, report) != 0 || run_checks(&c, report) != 0)
        goto out;
    log_debug("doctor", "checked servers=%ld clients=%ld jobs=%ld findings=%zu failed_reads=%zu", report->servers,
              report->clients, report->jobs, report->n_findings, report->n_failed_reads);
    rc = 0;

out:
    if (rc != 0)
        snprintf(err, errsz, "out of memory while checking the cluster");
    free_cluster(&c);
    return rc;
}
