/*
 * iptables side of the node inventory. It reads the nat and filter tables as
 * iptables-save prints them and keeps the chains and rules that the CNI
 * bridge, firewall and portmap plugins create. It finds the allocation each
 * belongs to, and the host ports that port-map rules of more than one
 * allocation claim.
 *
 * The plugins exec the iptables binary, which is the nf_tables backend on
 * current distributions, so the rules are read the same way: by running
 * iptables-save (never through libiptc, which would see only legacy tables).
 *
 * Attribution, strongest evidence first:
 *  - a rule whose comment is `name: "<network>" id: "A"` or
 *    `dnat name: "<network>" id: "A"` belongs to A; a comment that names
 *    another network attributes nothing;
 *  - a per-allocation chain (CNI-<24 hex>, CNI-DN-<21 hex>) belongs to the
 *    allocation of the commented jump into it, else of a commented rule
 *    inside it, else to the allocation whose sha512(network + A) gives its
 *    name, for every A seen in a namespace name, reservation, cache or comment;
 *  - a rule without a comment inside such a chain, or jumping to it, belongs
 *    to the chain's allocation;
 *  - a CNI-FORWARD rule for a /32 address belongs to the allocation that owns
 *    the address (see ip_owner), else to no allocation.
 *
 * NOTE: only iptables (IPv4) is read. Nomad's bridge is IPv4-only by default,
 * but the ip6tables rules of an allocation with an IPv6 range are not seen.
 */
#define _GNU_SOURCE
#include "host.h"
#include "proc.h"

#include <arpa/inet.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Defined in host_inventory.c. */
int host_inv_is_uuid(const char *text);
int host_inv_ip_parse(const char *text, unsigned char addr[16], int *family);
void *host_inv_grow(void *array, size_t count, size_t elem_size);
int host_inv_fail(struct host_inventory *inv, enum host_source src, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

int host_inv_read_iptables(const struct host_paths *paths, struct host_inventory *inv);

/* Large Kubernetes hosts print tens of MiB. Beyond this cap the table is reported as not read. */
#define SAVE_MAX_OUTPUT ((size_t)256 * 1024 * 1024)
#define DEFAULT_TIMEOUT_MS 10000
/* Nomad's iptablesAdminChainName, filled by the client, jumped to from CNI-FORWARD. */
#define ADMIN_CHAIN "NOMAD-ADMIN"
#define MASQ_HEX 24
#define DNAT_HEX 21

/* ---- chain names ---- */

int host_chain_names(const char *network, const char *alloc_id, char masq[32], char dnat[32])
{
    static const char digits[] = "0123456789abcdef";
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    char hex[2 * 64 + 1];
    EVP_MD_CTX *ctx;
    int rc = -1;

    if (network == NULL || alloc_id == NULL)
        return -1;
    ctx = EVP_MD_CTX_new();
    if (ctx == NULL)
        return -1;
    if (EVP_DigestInit_ex(ctx, EVP_sha512(), NULL) != 1 || EVP_DigestUpdate(ctx, network, strlen(network)) != 1 ||
        EVP_DigestUpdate(ctx, alloc_id, strlen(alloc_id)) != 1 || EVP_DigestFinal_ex(ctx, digest, &digest_len) != 1 ||
        digest_len != 64)
        goto out;
    for (unsigned int i = 0; i < digest_len; i++) {
        hex[2 * i] = digits[digest[i] >> 4];
        hex[2 * i + 1] = digits[digest[i] & 0xf];
    }
    hex[2 * digest_len] = '\0';
    snprintf(masq, 32, "CNI-%.*s", MASQ_HEX, hex);
    snprintf(dnat, 32, "CNI-DN-%.*s", DNAT_HEX, hex);
    rc = 0;
out:
    EVP_MD_CTX_free(ctx);
    return rc;
}

static int all_hex(const char *text, size_t len)
{
    if (strlen(text) != len)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (!((text[i] >= '0' && text[i] <= '9') || (text[i] >= 'a' && text[i] <= 'f')))
            return 0;
    }
    return 1;
}

/* The bridge plugin's ipMasq chain: "CNI-" + 24 hex. */
static int is_masq_chain(const char *name)
{
    return name != NULL && strncmp(name, "CNI-", 4) == 0 && all_hex(name + 4, MASQ_HEX);
}

/* The portmap plugin's per-container DNAT chain: "CNI-DN-" + 21 hex. */
static int is_dnat_chain(const char *name)
{
    return name != NULL && strncmp(name, "CNI-DN-", 7) == 0 && all_hex(name + 7, DNAT_HEX);
}

static int is_alloc_chain(const char *name)
{
    return is_masq_chain(name) || is_dnat_chain(name);
}

/* Per-host chains that CNI DEL never removes, so the cleaner must not remove them either. */
static int is_shared_chain(const char *name)
{
    static const char *const shared[] = {"CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK",
                                         "CNI-HOSTPORT-SNAT", "CNI-FORWARD", ADMIN_CHAIN};

    if (name == NULL)
        return 0;
    for (size_t i = 0; i < sizeof(shared) / sizeof(shared[0]); i++) {
        if (strcmp(name, shared[i]) == 0)
            return 1;
    }
    return 0;
}

/* Chains the inventory keeps: everything the CNI plugins and Nomad create. */
static int is_relevant_chain(const char *name)
{
    return name != NULL && (strncmp(name, "CNI-", 4) == 0 || strcmp(name, ADMIN_CHAIN) == 0);
}

static const char *chain_role(const char *name)
{
    if (is_masq_chain(name))
        return "bridge-ipmasq";
    if (is_dnat_chain(name))
        return "portmap-dnat";
    if (is_shared_chain(name))
        return "shared";
    return "other";
}

/* ---- tokens of an iptables-save rule ---- */

enum token_status { TOKENS_OK = 0, TOKENS_MALFORMED = 1, TOKENS_NO_MEMORY = -1 };

static void free_tokens(char **tokens, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(tokens[i]);
    free(tokens);
}

/*
 * Split a rule line the way iptables-save quotes it. Words are separated by
 * blanks. A value with characters other than [A-Za-z0-9_-] is printed in
 * double quotes, with '"', '\'' and '\\' escaped by a backslash.
 */
static enum token_status tokenize(const char *line, char ***tokens_out, size_t *n_out)
{
    char **tokens = NULL;
    size_t n = 0;
    const char *p = line;

    *tokens_out = NULL;
    *n_out = 0;
    for (;;) {
        char **grown;
        char *word;
        size_t len = 0;
        int quoted = 0;

        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            break;
        word = malloc(strlen(p) + 1);
        if (word == NULL)
            goto no_memory;
        while (*p != '\0' && (quoted || (*p != ' ' && *p != '\t'))) {
            if (*p == '"') {
                quoted = !quoted;
                p++;
            } else if (quoted && *p == '\\' && p[1] != '\0') {
                word[len++] = p[1];
                p += 2;
            } else {
                word[len++] = *p++;
            }
        }
        word[len] = '\0';
        if (quoted) {
            free(word);
            free_tokens(tokens, n);
            return TOKENS_MALFORMED;
        }
        grown = host_inv_grow(tokens, n, sizeof(*tokens));
        if (grown == NULL) {
            free(word);
            goto no_memory;
        }
        tokens = grown;
        tokens[n++] = word;
    }
    *tokens_out = tokens;
    *n_out = n;
    return TOKENS_OK;

no_memory:
    free_tokens(tokens, n);
    return TOKENS_NO_MEMORY;
}

/* ---- fields of one rule ---- */

/* Option values of a rule, pointing into its tokens. Negated options are left out. */
struct rule_view {
    const char *protocol;
    const char *source;
    const char *destination;
    const char *target;
    const char *ports;        /* --dports list or --dport value */
    const char *dnat_to;
    const char *comment;
};

static int is_option(const char *arg, const char *short_name, const char *long_name)
{
    return (short_name != NULL && strcmp(arg, short_name) == 0) || strcmp(arg, long_name) == 0;
}

static void view_rule(char **args, size_t n, struct rule_view *view)
{
    memset(view, 0, sizeof(*view));
    for (size_t i = 0; i + 1 < n; i++) {
        int negated = 0;
        const char *opt;
        const char *value;

        if (strcmp(args[i], "!") == 0) {
            negated = 1;
            i++;
            if (i + 1 >= n)
                break;
        }
        opt = args[i];
        value = args[i + 1];
        if (is_option(opt, "-p", "--protocol")) {
            if (!negated)
                view->protocol = value;
        } else if (is_option(opt, "-s", "--source")) {
            if (!negated)
                view->source = value;
        } else if (is_option(opt, "-d", "--destination")) {
            if (!negated)
                view->destination = value;
        } else if (is_option(opt, "-j", "--jump") || is_option(opt, "-g", "--goto")) {
            view->target = value;
        } else if (is_option(opt, NULL, "--dports") || is_option(opt, NULL, "--destination-ports") ||
                   is_option(opt, NULL, "--dport") || is_option(opt, NULL, "--destination-port")) {
            if (!negated)
                view->ports = value;
        } else if (is_option(opt, NULL, "--to-destination")) {
            view->dnat_to = value;
        } else if (is_option(opt, NULL, "--comment")) {
            view->comment = value;
        } else {
            continue;
        }
        i++;   /* the value was consumed */
    }
}

/*
 * Copy the address of "X/32" (IPv4), "X/128" (IPv6) or a bare address into
 * out. Returns 0 for networks and for anything that does not parse.
 */
static int host_address(const char *value, char *out, size_t outsz)
{
    const char *slash;
    size_t len;
    int family = 0;

    if (value == NULL)
        return 0;
    slash = strchr(value, '/');
    len = slash != NULL ? (size_t)(slash - value) : strlen(value);
    if (len == 0 || len >= outsz)
        return 0;
    memcpy(out, value, len);
    out[len] = '\0';
    if (!host_inv_ip_parse(out, NULL, &family))
        return 0;
    if (slash == NULL)
        return 1;
    return (family == AF_INET && strcmp(slash, "/32") == 0) || (family == AF_INET6 && strcmp(slash, "/128") == 0);
}

static int parse_port(const char *text, size_t len, int *port)
{
    int value = 0;

    if (len == 0 || len > 5)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return 0;
        value = value * 10 + (text[i] - '0');
    }
    if (value > 65535)
        return 0;
    *port = value;
    return 1;
}

/*
 * Expand "a,b,c:d" into every port. Returns 0, 1 when the list does not
 * parse (the rule then has no ports), or -1 on no memory.
 */
static int expand_ports(const char *list, int **ports_out, size_t *n_out)
{
    const char *p = list;
    int *ports = NULL;
    size_t n = 0;

    *ports_out = NULL;
    *n_out = 0;
    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        const char *colon = memchr(p, ':', len);
        int first, last;

        if (colon != NULL) {
            if (!parse_port(p, (size_t)(colon - p), &first) ||
                !parse_port(colon + 1, len - (size_t)(colon - p) - 1, &last) || first > last)
                goto malformed;
        } else if (parse_port(p, len, &first)) {
            last = first;
        } else {
            goto malformed;
        }
        for (int port = first; port <= last; port++) {
            int *grown = host_inv_grow(ports, n, sizeof(*ports));

            if (grown == NULL) {
                free(ports);
                return -1;
            }
            ports = grown;
            ports[n++] = port;
        }
        p += len;
        if (*p == ',')
            p++;
    }
    *ports_out = ports;
    *n_out = n;
    return 0;

malformed:
    free(ports);
    return 1;
}

/*
 * Copy the allocation ID of a bridge (`name: "<network>" id: "A"`) or
 * portmap (`dnat name: "<network>" id: "A"`) comment into out. The pattern
 * must match the whole comment, and out is "" for any other comment.
 */
static void comment_alloc_id(const char *comment, const char *network, char out[HOST_ID_LEN + 1])
{
    const char *p = comment;
    size_t net_len = strlen(network);

    out[0] = '\0';
    if (p == NULL)
        return;
    if (strncmp(p, "dnat ", 5) == 0)
        p += 5;
    if (strncmp(p, "name: \"", 7) != 0)
        return;
    p += 7;
    if (strncmp(p, network, net_len) != 0)
        return;
    p += net_len;
    if (strncmp(p, "\" id: \"", 7) != 0)
        return;
    p += 7;
    if (strlen(p) != HOST_ID_LEN + 1 || p[HOST_ID_LEN] != '"')
        return;
    memcpy(out, p, HOST_ID_LEN);
    out[HOST_ID_LEN] = '\0';
    if (!host_inv_is_uuid(out))
        out[0] = '\0';
}

/*
 * Tell whether a rule is shared infrastructure. Those are the jumps into the
 * shared chains from anywhere but a per-allocation chain, and the rules
 * inside the shared chains that are not an allocation's. In
 * CNI-HOSTPORT-DNAT every rule but the jumps to CNI-DN-* is shared, and in
 * CNI-FORWARD every rule but the per-address ones.
 */
static int rule_is_shared(const char *chain, const char *target, const char *ip)
{
    if (is_alloc_chain(chain))
        return 0;
    if (strcmp(chain, "CNI-HOSTPORT-DNAT") == 0)
        return !is_dnat_chain(target);
    if (strcmp(chain, "CNI-FORWARD") == 0)
        return ip == NULL;
    if (is_shared_chain(chain))
        return 1;
    return is_shared_chain(target);
}

/* ---- parsing iptables-save output ---- */

/* Every chain the table declares, with its rule count so far (for positions). */
struct declared_chain {
    const char *name;   /* points into the output text */
    int rules;
};

struct table_parse {
    struct host_inventory *inv;
    enum host_source src;
    const char *table;
    const char *network;
    struct declared_chain *declared;
    size_t n_declared;
    int sorted;
    int seen_header;
};

static int compare_declared(const void *a, const void *b)
{
    return strcmp(((const struct declared_chain *)a)->name, ((const struct declared_chain *)b)->name);
}

static struct declared_chain *find_declared(struct table_parse *tp, const char *name)
{
    struct declared_chain key = {.name = name};

    if (!tp->sorted) {
        qsort(tp->declared, tp->n_declared, sizeof(*tp->declared), compare_declared);
        tp->sorted = 1;
    }
    return bsearch(&key, tp->declared, tp->n_declared, sizeof(*tp->declared), compare_declared);
}

/* ":NAME POLICY [packets:bytes]". Returns -1 on no memory. */
static int parse_chain_line(struct table_parse *tp, char *line)
{
    struct host_inventory *inv = tp->inv;
    struct declared_chain *grown;
    struct host_ipt_chain *chain;
    char *name = line + 1;
    size_t len = strcspn(name, " \t");

    if (len == 0)
        return host_inv_fail(inv, tp->src, "iptables-save printed a chain line without a name: \"%s\"", line);
    name[len] = '\0';
    grown = host_inv_grow(tp->declared, tp->n_declared, sizeof(*tp->declared));
    if (grown == NULL)
        return -1;
    tp->declared = grown;
    tp->declared[tp->n_declared++] = (struct declared_chain){.name = name, .rules = 0};
    tp->sorted = 0;
    if (!is_relevant_chain(name))
        return 0;

    chain = host_inv_grow(inv->chains, inv->n_chains, sizeof(*inv->chains));
    if (chain == NULL)
        return -1;
    inv->chains = chain;
    chain = &inv->chains[inv->n_chains];
    memset(chain, 0, sizeof(*chain));
    chain->table = strdup(tp->table);
    chain->name = strdup(name);
    chain->role = chain_role(name);
    if (chain->table == NULL || chain->name == NULL) {
        free(chain->table);
        free(chain->name);
        return -1;
    }
    inv->n_chains++;
    return 0;
}

/* Copy the parsed fields of a kept rule. Returns -1 on no memory. */
static int fill_rule(struct host_ipt_rule *rule, const struct rule_view *view, const char *ip)
{
    int rc;

    if (view->target != NULL && (rule->target = strdup(view->target)) == NULL)
        return -1;
    if (ip != NULL && (rule->ip = strdup(ip)) == NULL)
        return -1;
    if (view->protocol != NULL && (rule->protocol = strdup(view->protocol)) == NULL)
        return -1;
    if (view->dnat_to != NULL && (rule->dnat_to = strdup(view->dnat_to)) == NULL)
        return -1;
    if (view->ports == NULL)
        return 0;
    rc = expand_ports(view->ports, &rule->ports, &rule->n_ports);
    return rc < 0 ? -1 : 0;
}

/* "-A CHAIN args...". Returns -1 on no memory. */
static int parse_rule_line(struct table_parse *tp, const char *line)
{
    char alloc_id[HOST_ID_LEN + 1];
    struct host_inventory *inv = tp->inv;
    struct declared_chain *declared;
    struct host_ipt_rule *rule;
    struct rule_view view;
    char ipbuf[INET6_ADDRSTRLEN];
    const char *ip = NULL;
    enum token_status status;
    char **tokens = NULL;
    size_t n = 0;
    int rc = 0;

    status = tokenize(line, &tokens, &n);
    if (status == TOKENS_NO_MEMORY)
        return -1;
    if (status == TOKENS_MALFORMED)
        return host_inv_fail(inv, tp->src, "cannot parse the %s rule \"%s\" (unbalanced quotes)", tp->table, line);
    if (n < 2) {
        rc = host_inv_fail(inv, tp->src, "cannot parse the %s rule \"%s\" (no chain name)", tp->table, line);
        goto out;
    }
    declared = find_declared(tp, tokens[1]);
    if (declared == NULL) {
        rc = host_inv_fail(inv, tp->src, "iptables-save printed a rule for the undeclared %s chain %s", tp->table,
                           tokens[1]);
        goto out;
    }
    declared->rules++;
    view_rule(tokens + 2, n - 2, &view);
    comment_alloc_id(view.comment, tp->network, alloc_id);
    if (!is_relevant_chain(tokens[1]) && !is_relevant_chain(view.target) && alloc_id[0] == '\0')
        goto out;
    if (host_address(view.source, ipbuf, sizeof(ipbuf)) || host_address(view.destination, ipbuf, sizeof(ipbuf)))
        ip = ipbuf;

    rule = host_inv_grow(inv->rules, inv->n_rules, sizeof(*inv->rules));
    if (rule == NULL) {
        rc = -1;
        goto out;
    }
    inv->rules = rule;
    rule = &inv->rules[inv->n_rules++];
    memset(rule, 0, sizeof(*rule));
    rule->position = declared->rules;
    memcpy(rule->alloc_id, alloc_id, sizeof(alloc_id));
    rule->shared = rule_is_shared(tokens[1], view.target, ip);
    rule->table = strdup(tp->table);
    rule->line = strdup(line);
    if (rule->table == NULL || rule->line == NULL || fill_rule(rule, &view, ip) != 0) {
        rc = -1;
        goto out;
    }
    /* The rule takes the chain name and the argument tokens; only "-A" is freed here. */
    rule->chain = tokens[1];
    tokens[1] = NULL;
    if (n > 2) {
        rule->args = malloc((n - 2) * sizeof(*rule->args));
        if (rule->args == NULL) {
            rc = -1;
            goto out;
        }
        for (size_t i = 2; i < n; i++) {
            rule->args[i - 2] = tokens[i];
            tokens[i] = NULL;
        }
        rule->n_args = n - 2;
    }
out:
    free_tokens(tokens, n);
    return rc;
}

/* Parse one table's output in place (line ends are overwritten). Returns -1 on no memory. */
static int parse_save_output(struct table_parse *tp, char *text)
{
    char *line = text;
    int rc = 0;

    while (rc == 0 && line != NULL && *line != '\0') {
        char *end = strchr(line, '\n');

        if (end != NULL)
            *end = '\0';
        if (line[0] == '*') {
            if (strcmp(line + 1, tp->table) == 0)
                tp->seen_header = 1;
            else
                rc = host_inv_fail(tp->inv, tp->src, "iptables-save -t %s printed the table \"%s\"", tp->table,
                                   line + 1);
        } else if (line[0] == ':') {
            rc = parse_chain_line(tp, line);
        } else if (strncmp(line, "-A ", 3) == 0) {
            rc = parse_rule_line(tp, line);
        }
        line = end != NULL ? end + 1 : NULL;
    }
    if (rc == 0 && !tp->seen_header)
        rc = host_inv_fail(tp->inv, tp->src, "iptables-save -t %s printed no \"*%s\" table", tp->table, tp->table);
    return rc;
}

/*
 * Run `<iptables-save> -t <table>` and parse it. A missing binary or a
 * failing run marks the source failed, and it never counts as "no rules".
 */
static int read_table(const struct host_paths *paths, struct host_inventory *inv, const char *table,
                      enum host_source src)
{
    const char *argv[] = {paths->iptables_save, "-t", table, NULL};
    struct table_parse tp = {.inv = inv, .src = src, .table = table, .network = paths->network_name};
    long timeout = paths->command_timeout_ms > 0 ? paths->command_timeout_ms : DEFAULT_TIMEOUT_MS;
    struct proc_result res;
    char errbuf[512];
    char brief[512];
    int rc;

    if (paths->iptables_save == NULL || paths->iptables_save[0] == '\0')
        return host_inv_fail(inv, src, "no iptables-save command is configured");
    if (proc_run(argv, NULL, NULL, 0, timeout, SAVE_MAX_OUTPUT, &res, errbuf, sizeof(errbuf)) != 0) {
        rc = host_inv_fail(inv, src, "`%s -t %s` failed: %s; install iptables or configure the iptables-save path",
                           paths->iptables_save, table, errbuf);
    } else if (res.exit_code != 0) {
        rc = host_inv_fail(inv, src, "`%s -t %s` exited with %s %d: %s", paths->iptables_save, table,
                           res.term_signal != 0 ? "signal" : "status",
                           res.term_signal != 0 ? res.term_signal : res.exit_code,
                           proc_brief(&res, brief, sizeof(brief)));
    } else if (res.truncated) {
        rc = host_inv_fail(inv, src, "`%s -t %s` printed more than %zu bytes, so the table was not read",
                           paths->iptables_save, table, SAVE_MAX_OUTPUT);
    } else {
        rc = parse_save_output(&tp, res.out);
    }
    free(tp.declared);
    proc_result_free(&res);
    return rc;
}

/* ---- attribution ---- */

typedef char alloc_id_t[HOST_ID_LEN + 1];

struct hashed_name {
    char name[32];
    const char *alloc_id;
};

static int compare_hashed(const void *a, const void *b)
{
    return strcmp(((const struct hashed_name *)a)->name, ((const struct hashed_name *)b)->name);
}

static int compare_id(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

static int collect_id(alloc_id_t **ids, size_t *n, const char *id)
{
    alloc_id_t *grown;

    if (id[0] == '\0')
        return 0;
    grown = host_inv_grow(*ids, *n, sizeof(**ids));
    if (grown == NULL)
        return -1;
    *ids = grown;
    memcpy((*ids)[(*n)++], id, HOST_ID_LEN + 1);
    return 0;
}

/* Every allocation ID seen anywhere, sorted and unique. */
static int known_ids(const struct host_inventory *inv, alloc_id_t **ids_out, size_t *n_out)
{
    alloc_id_t *ids = NULL;
    size_t n = 0, kept = 0;
    int rc = 0;

    for (size_t i = 0; rc == 0 && i < inv->n_netns; i++)
        rc = collect_id(&ids, &n, inv->netns[i].alloc_id);
    for (size_t i = 0; rc == 0 && i < inv->n_reservations; i++)
        rc = collect_id(&ids, &n, inv->reservations[i].alloc_id);
    for (size_t i = 0; rc == 0 && i < inv->n_caches; i++)
        rc = collect_id(&ids, &n, inv->caches[i].alloc_id);
    for (size_t i = 0; rc == 0 && i < inv->n_rules; i++)
        rc = collect_id(&ids, &n, inv->rules[i].alloc_id);
    if (rc != 0) {
        free(ids);
        return -1;
    }
    if (n > 1)
        qsort(ids, n, sizeof(*ids), compare_id);
    for (size_t i = 0; i < n; i++) {
        if (kept == 0 || strcmp(ids[kept - 1], ids[i]) != 0)
            memmove(ids[kept++], ids[i], sizeof(*ids));
    }
    *ids_out = ids;
    *n_out = kept;
    return 0;
}

/* Both chain names of every known ID, sorted by name. */
static int hash_known_ids(const char *network, const alloc_id_t *ids, size_t n_ids, struct hashed_name **out)
{
    struct hashed_name *names;

    *out = NULL;
    if (n_ids == 0)
        return 0;
    names = calloc(2 * n_ids, sizeof(*names));
    if (names == NULL)
        return -1;
    for (size_t i = 0; i < n_ids; i++) {
        if (host_chain_names(network, ids[i], names[2 * i].name, names[2 * i + 1].name) != 0) {
            free(names);
            return -1;
        }
        names[2 * i].alloc_id = ids[i];
        names[2 * i + 1].alloc_id = ids[i];
    }
    qsort(names, 2 * n_ids, sizeof(*names), compare_hashed);
    *out = names;
    return 0;
}

/* Chains sorted by (table, name), as indexes into inv->chains. */
struct chain_index {
    const struct host_inventory *inv;
    size_t *order;
};

static int compare_chain_order(const void *a, const void *b, void *context)
{
    const struct host_inventory *inv = context;
    const struct host_ipt_chain *x = &inv->chains[*(const size_t *)a];
    const struct host_ipt_chain *y = &inv->chains[*(const size_t *)b];
    int c = strcmp(x->table, y->table);

    return c != 0 ? c : strcmp(x->name, y->name);
}

static int build_chain_index(const struct host_inventory *inv, struct chain_index *index)
{
    index->inv = inv;
    index->order = malloc((inv->n_chains > 0 ? inv->n_chains : 1) * sizeof(size_t));
    if (index->order == NULL)
        return -1;
    for (size_t i = 0; i < inv->n_chains; i++)
        index->order[i] = i;
    qsort_r(index->order, inv->n_chains, sizeof(size_t), compare_chain_order, (void *)inv);
    return 0;
}

static struct host_ipt_chain *find_chain(const struct chain_index *index, const char *table, const char *name)
{
    size_t lo = 0, hi = index->inv->n_chains;

    if (name == NULL)
        return NULL;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        struct host_ipt_chain *chain = &index->inv->chains[index->order[mid]];
        int c = strcmp(chain->table, table);

        if (c == 0)
            c = strcmp(chain->name, name);
        if (c == 0)
            return chain;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* One claim on an address: a reservation (alloc_id may be "" for a non-Nomad owner) or a cache. */
struct ip_claim {
    unsigned char addr[16];
    int family;
    int reservation;
    const char *alloc_id;
};

static int compare_claims(const void *a, const void *b)
{
    const struct ip_claim *x = a, *y = b;

    if (x->family != y->family)
        return x->family < y->family ? -1 : 1;
    return memcmp(x->addr, y->addr, sizeof(x->addr));
}

static int add_claim(struct ip_claim **claims, size_t *n, const char *ip, int reservation, const char *alloc_id)
{
    struct ip_claim claim = {.reservation = reservation, .alloc_id = alloc_id};
    struct ip_claim *grown;

    if (!host_inv_ip_parse(ip, claim.addr, &claim.family))
        return 0;
    grown = host_inv_grow(*claims, *n, sizeof(**claims));
    if (grown == NULL)
        return -1;
    *claims = grown;
    (*claims)[(*n)++] = claim;
    return 0;
}

static int build_claims(const struct host_inventory *inv, struct ip_claim **claims_out, size_t *n_out)
{
    struct ip_claim *claims = NULL;
    size_t n = 0;

    for (size_t i = 0; i < inv->n_reservations; i++) {
        if (add_claim(&claims, &n, inv->reservations[i].ip, 1, inv->reservations[i].alloc_id) != 0)
            goto no_memory;
    }
    for (size_t i = 0; i < inv->n_caches; i++) {
        const struct host_cni_cache *cache = &inv->caches[i];

        if (cache->error != NULL)
            continue;
        for (size_t j = 0; j < cache->n_ips; j++) {
            if (add_claim(&claims, &n, cache->ips[j], 0, cache->alloc_id) != 0)
                goto no_memory;
        }
    }
    if (n > 1)
        qsort(claims, n, sizeof(*claims), compare_claims);
    *claims_out = claims;
    *n_out = n;
    return 0;

no_memory:
    free(claims);
    return -1;
}

/*
 * Return the allocation that owns ip, or "" when none or more than one does.
 * host-local's reservation is the current truth, so when one exists the
 * caches are not consulted. A reservation by a non-UUID owner, or two
 * reservations (new and legacy directory) naming different allocations,
 * leave the address unattributed. No cleanup then removes firewall rules
 * that another owner still needs.
 */
static const char *ip_owner(const struct ip_claim *claims, size_t n, const char *ip)
{
    struct ip_claim key = {0};
    const char *owner = NULL;
    int use_reservations = 0;
    size_t lo = 0, hi = n;

    if (!host_inv_ip_parse(ip, key.addr, &key.family))
        return "";
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (compare_claims(&claims[mid], &key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t i = lo; i < n && compare_claims(&claims[i], &key) == 0; i++)
        use_reservations |= claims[i].reservation;
    for (size_t i = lo; i < n && compare_claims(&claims[i], &key) == 0; i++) {
        if (claims[i].reservation != use_reservations)
            continue;
        if (owner != NULL && strcmp(owner, claims[i].alloc_id) != 0)
            return "";
        owner = claims[i].alloc_id;
    }
    return owner != NULL ? owner : "";
}

/* src is an ID or "" (ip_owner returns a literal ""), so copy only up to its NUL. */
static void copy_id(char dst[HOST_ID_LEN + 1], const char *src)
{
    snprintf(dst, HOST_ID_LEN + 1, "%s", src);
}

static int attribute(struct host_inventory *inv, const char *network)
{
    struct chain_index index = {0};
    struct hashed_name *names = NULL;
    struct ip_claim *claims = NULL;
    alloc_id_t *ids = NULL;
    size_t n_ids = 0, n_claims = 0;
    int rc = -1;

    if (known_ids(inv, &ids, &n_ids) != 0 || hash_known_ids(network, ids, n_ids, &names) != 0 ||
        build_chain_index(inv, &index) != 0 || build_claims(inv, &claims, &n_claims) != 0)
        goto out;

    /* Jumps mark their targets as referenced, and a commented jump names the chain's allocation. */
    for (size_t i = 0; i < inv->n_rules; i++) {
        struct host_ipt_rule *rule = &inv->rules[i];
        struct host_ipt_chain *chain = find_chain(&index, rule->table, rule->target);

        if (chain == NULL)
            continue;
        chain->referenced = 1;
        if (is_alloc_chain(chain->name) && chain->alloc_id[0] == '\0' && rule->alloc_id[0] != '\0')
            copy_id(chain->alloc_id, rule->alloc_id);
    }
    /* Then commented rules inside a chain whose jump is gone. */
    for (size_t i = 0; i < inv->n_rules; i++) {
        struct host_ipt_rule *rule = &inv->rules[i];
        struct host_ipt_chain *chain;

        if (rule->alloc_id[0] == '\0' || !is_alloc_chain(rule->chain))
            continue;
        chain = find_chain(&index, rule->table, rule->chain);
        if (chain != NULL && chain->alloc_id[0] == '\0')
            copy_id(chain->alloc_id, rule->alloc_id);
    }
    /* Then the name: sha512(network + A) of an allocation seen elsewhere. */
    for (size_t i = 0; i < inv->n_chains; i++) {
        struct host_ipt_chain *chain = &inv->chains[i];
        struct hashed_name key, *hit;

        if (chain->alloc_id[0] != '\0' || !is_alloc_chain(chain->name) || n_ids == 0)
            continue;
        snprintf(key.name, sizeof(key.name), "%s", chain->name);
        hit = bsearch(&key, names, 2 * n_ids, sizeof(*names), compare_hashed);
        if (hit != NULL)
            copy_id(chain->alloc_id, hit->alloc_id);
    }
    /* Rules without a comment of their own. */
    for (size_t i = 0; i < inv->n_rules; i++) {
        struct host_ipt_rule *rule = &inv->rules[i];
        struct host_ipt_chain *chain = NULL;

        if (rule->alloc_id[0] != '\0' || rule->shared)
            continue;
        if (is_alloc_chain(rule->chain))
            chain = find_chain(&index, rule->table, rule->chain);
        else if (is_alloc_chain(rule->target))
            chain = find_chain(&index, rule->table, rule->target);
        if (chain != NULL)
            copy_id(rule->alloc_id, chain->alloc_id);
        else if (strcmp(rule->table, "filter") == 0 && strcmp(rule->chain, "CNI-FORWARD") == 0 && rule->ip != NULL)
            copy_id(rule->alloc_id, ip_owner(claims, n_claims, rule->ip));
    }
    rc = 0;
out:
    free(index.order);
    free(names);
    free(claims);
    free(ids);
    return rc;
}

/* ---- host-port conflicts ---- */

/* One (protocol, port) that a CNI-HOSTPORT-DNAT jump of an allocation claims. */
struct port_claim {
    const char *protocol;
    int port;
    int position;
    const char *alloc_id;
    const char *chain;
    const char *dnat_to;     /* from the chain's DNAT rule, may be NULL */
    char host_ip[INET6_ADDRSTRLEN];   /* "-d" of that DNAT rule, or "" for any local address */
};

static int compare_port_claims(const void *a, const void *b)
{
    const struct port_claim *x = a, *y = b;
    int c = strcmp(x->protocol, y->protocol);

    if (c != 0)
        return c;
    if (x->port != y->port)
        return x->port < y->port ? -1 : 1;
    return x->position < y->position ? -1 : x->position > y->position;
}

static int rule_has_port(const struct host_ipt_rule *rule, int port)
{
    for (size_t i = 0; i < rule->n_ports; i++) {
        if (rule->ports[i] == port)
            return 1;
    }
    return 0;
}

/* The destination of a DNAT rule, as a host address, from its own arguments. */
static void dnat_host_ip(const struct host_ipt_rule *rule, char *out, size_t outsz)
{
    struct rule_view view;

    out[0] = '\0';
    view_rule(rule->args, rule->n_args, &view);
    if (!host_address(view.destination, out, outsz))
        out[0] = '\0';
}

/* Follow the claim's chain to the DNAT rule for its protocol and port. */
static void follow_dnat(const struct host_inventory *inv, struct port_claim *claim)
{
    for (size_t i = 0; i < inv->n_rules; i++) {
        const struct host_ipt_rule *rule = &inv->rules[i];

        if (strcmp(rule->table, "nat") != 0 || strcmp(rule->chain, claim->chain) != 0 || rule->target == NULL ||
            strcmp(rule->target, "DNAT") != 0 || rule->protocol == NULL ||
            strcmp(rule->protocol, claim->protocol) != 0 || !rule_has_port(rule, claim->port))
            continue;
        claim->dnat_to = rule->dnat_to;
        dnat_host_ip(rule, claim->host_ip, sizeof(claim->host_ip));
        return;
    }
}

static int collect_port_claims(const struct host_inventory *inv, struct port_claim **out, size_t *n_out)
{
    struct port_claim *claims = NULL;
    size_t n = 0;

    for (size_t i = 0; i < inv->n_rules; i++) {
        const struct host_ipt_rule *rule = &inv->rules[i];

        if (strcmp(rule->table, "nat") != 0 || strcmp(rule->chain, "CNI-HOSTPORT-DNAT") != 0 ||
            !is_dnat_chain(rule->target) || rule->alloc_id[0] == '\0' || rule->protocol == NULL)
            continue;
        for (size_t j = 0; j < rule->n_ports; j++) {
            struct port_claim *grown = host_inv_grow(claims, n, sizeof(*claims));

            if (grown == NULL) {
                free(claims);
                return -1;
            }
            claims = grown;
            memset(&claims[n], 0, sizeof(claims[n]));
            claims[n].protocol = rule->protocol;
            claims[n].port = rule->ports[j];
            claims[n].position = rule->position;
            claims[n].alloc_id = rule->alloc_id;
            claims[n].chain = rule->target;
            follow_dnat(inv, &claims[n]);
            n++;
        }
    }
    *out = claims;
    *n_out = n;
    return 0;
}

/* Two DNAT rules can both match a packet unless they name different host addresses. */
static int host_ips_overlap(const char *a, const char *b)
{
    return a[0] == '\0' || b[0] == '\0' || strcmp(a, b) == 0;
}

static char *strdup_or_null(const char *text, int *failed)
{
    char *copy;

    if (text == NULL)
        return NULL;
    copy = strdup(text);
    if (copy == NULL)
        *failed = 1;
    return copy;
}

/*
 * Find or add the conflict whose effective claim is effective, among the
 * conflicts added for the current (protocol, port). Returns NULL on no memory.
 */
static struct host_port_conflict *conflict_for(struct host_inventory *inv, const struct port_claim *effective,
                                               size_t *first_of_group)
{
    struct host_port_conflict *conflict;
    int failed = 0;

    for (size_t i = *first_of_group; i < inv->n_conflicts; i++) {
        conflict = &inv->conflicts[i];
        if (strcmp(conflict->effective_alloc, effective->alloc_id) == 0 &&
            strcmp(conflict->effective_chain, effective->chain) == 0)
            return conflict;
    }
    conflict = host_inv_grow(inv->conflicts, inv->n_conflicts, sizeof(*inv->conflicts));
    if (conflict == NULL)
        return NULL;
    inv->conflicts = conflict;
    conflict = &inv->conflicts[inv->n_conflicts];
    memset(conflict, 0, sizeof(*conflict));
    snprintf(conflict->protocol, sizeof(conflict->protocol), "%s", effective->protocol);
    conflict->port = effective->port;
    copy_id(conflict->effective_alloc, effective->alloc_id);
    conflict->effective_chain = strdup_or_null(effective->chain, &failed);
    conflict->effective_dnat = strdup_or_null(effective->dnat_to, &failed);
    if (failed) {
        free(conflict->effective_chain);
        free(conflict->effective_dnat);
        return NULL;
    }
    inv->n_conflicts++;
    return conflict;
}

static int add_shadowed(struct host_port_conflict *conflict, const struct port_claim *claim)
{
    struct host_port_claim *grown;
    struct host_port_claim *entry;
    int failed = 0;

    for (size_t i = 0; i < conflict->n_shadowed; i++) {
        if (strcmp(conflict->shadowed[i].alloc_id, claim->alloc_id) == 0)
            return 0;
    }
    grown = host_inv_grow(conflict->shadowed, conflict->n_shadowed, sizeof(*conflict->shadowed));
    if (grown == NULL)
        return -1;
    conflict->shadowed = grown;
    entry = &conflict->shadowed[conflict->n_shadowed];
    memset(entry, 0, sizeof(*entry));
    copy_id(entry->alloc_id, claim->alloc_id);
    entry->chain = strdup_or_null(claim->chain, &failed);
    entry->dnat_to = strdup_or_null(claim->dnat_to, &failed);
    if (failed) {
        free(entry->chain);
        free(entry->dnat_to);
        return -1;
    }
    conflict->n_shadowed++;
    return 0;
}

/*
 * portmap appends its jumps and the first matching rule wins. Within one
 * (protocol, port), a claim is shadowed by the first earlier claim of
 * another allocation whose host address overlaps. The claims shadowed by
 * the same earlier claim form one conflict, with that claim as the
 * effective one.
 */
static int find_conflicts(struct host_inventory *inv)
{
    struct port_claim *claims = NULL;
    size_t n = 0;
    int rc = 0;

    if (collect_port_claims(inv, &claims, &n) != 0)
        return -1;
    if (n > 1)
        qsort(claims, n, sizeof(*claims), compare_port_claims);
    for (size_t start = 0; rc == 0 && start < n;) {
        size_t end = start + 1;
        size_t first_conflict = inv->n_conflicts;

        while (end < n && strcmp(claims[end].protocol, claims[start].protocol) == 0 &&
               claims[end].port == claims[start].port)
            end++;
        for (size_t i = start + 1; rc == 0 && i < end; i++) {
            for (size_t j = start; j < i; j++) {
                struct host_port_conflict *conflict;

                if (strcmp(claims[j].alloc_id, claims[i].alloc_id) == 0 ||
                    !host_ips_overlap(claims[j].host_ip, claims[i].host_ip))
                    continue;
                conflict = conflict_for(inv, &claims[j], &first_conflict);
                rc = conflict == NULL ? -1 : add_shadowed(conflict, &claims[i]);
                break;
            }
        }
        start = end;
    }
    free(claims);
    return rc;
}

int host_inv_read_iptables(const struct host_paths *paths, struct host_inventory *inv)
{
    if (read_table(paths, inv, "nat", HOST_SRC_IPTABLES_NAT) != 0 ||
        read_table(paths, inv, "filter", HOST_SRC_IPTABLES_FILTER) != 0)
        return -1;
    if (attribute(inv, paths->network_name) != 0)
        return -1;
    return find_conflicts(inv);
}
