/*
 * Nomad HTTP API client over libcurl.
 *
 * A client owns one easy handle for nomad_request(), so sequential requests
 * reuse one keep-alive connection, and lazily a multi handle with a pool of
 * max_connections easy handles for nomad_get_many(). Every transfer is
 * configured from scratch with curl_easy_reset(), which keeps the handle's
 * live connections, DNS cache and TLS session cache.
 */
#define _POSIX_C_SOURCE 200809L
#include "nomad.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define COMPONENT "nomad"

/* Characters of Nomad's error body quoted in resp->error. */
#define ERROR_EXCERPT_MAX 200

/* Maximum single backoff sleep, whatever retry_base_ms and the attempt count give. */
#define BACKOFF_MAX_MS 60000L

/*
 * Wait a Nomad server applies to a blocking query (index > 0) without a
 * positive wait= value: 300 s (MaxBlockingRPCQueryTime in nomad/structs,
 * Nomad 1.x to 2.0).
 */
#define DEFAULT_BLOCKING_WAIT_MS 300000.0

/* Maximum wait= used when extending the timeout, so the arithmetic cannot overflow. */
#define MAX_BLOCKING_WAIT_MS (24.0 * 3600.0 * 1000.0)

/* Marks an idle pool transfer. */
#define SLOT_IDLE ((size_t)-1)

/* One easy handle together with the response it is receiving. */
struct transfer {
    CURL *easy;
    char errbuf[CURL_ERROR_SIZE];

    char *body;             /* decoded bytes received so far, NUL-terminated when non-NULL */
    size_t body_len;
    size_t body_cap;
    size_t body_max;        /* max_response_bytes */
    int too_large;          /* the write callback stopped the transfer at body_max */
    int out_of_memory;      /* the write or header callback failed to allocate */

    /* X-Nomad-* values of the latest response head; reset at each status line. */
    uint64_t index;
    int known_leader;
    long last_contact_ms;
    char *next_token;

    /* nomad_get_many() only: which path this transfer serves, or SLOT_IDLE. */
    size_t slot;
};

struct nomad_client {
    char *address;          /* for messages: scheme://host[:port] or unix://path, no credentials */
    char *base_url;         /* prefix of request URLs: scheme://host:port */
    char *unix_socket;      /* NULL unless the address is unix:// */
    struct curl_slist *connect_to;  /* CURLOPT_CONNECT_TO entry for tls_server_name, or NULL */
    char *region_param;     /* "region=<escaped>", or NULL */

    char *username;         /* HTTP Basic, NULL when unset; secret together with password */
    char *password;
    int https;
    int local;              /* the address is a unix socket, a loopback address or "localhost" */
    char *ca_cert;
    char *ca_path;
    char *client_cert;
    char *client_key;
    int skip_verify;

    long connect_timeout_ms;
    long request_timeout_ms;
    int max_retries;
    long retry_base_ms;
    size_t max_response_bytes;
    int max_connections;
    int compress;           /* send Accept-Encoding */

    /* Request headers. They contain the ACL token, so never print them. */
    struct curl_slist *read_headers;
    struct curl_slist *write_headers;

    struct transfer single;

    CURLM *multi;           /* created by the first nomad_get_many() */
    struct transfer *pool;  /* max_connections transfers for the multi handle */

    uint64_t rng_state;     /* xorshift64* state for backoff jitter */

    nomad_observer_fn observer;     /* NULL when none is installed */
    void *observer_ctx;
};

/* ---- libcurl global state ---- */

static pthread_once_t global_init_once = PTHREAD_ONCE_INIT;
static CURLcode global_init_result = CURLE_FAILED_INIT;

/*
 * curl_global_init() is thread-safe only in libcurl 7.84+ builds with the
 * "threadsafe" feature, so it runs exactly once through pthread_once().
 * curl_global_cleanup() is never called, so the library stays initialised
 * for the life of the process.
 */
static void global_init(void)
{
    global_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- small helpers ---- */

static double monotonic_s(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
    struct timespec delay = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};

    while (nanosleep(&delay, &delay) != 0 && errno == EINTR)
        continue;
}

static char *dup_or_null(const char *text)
{
    return text != NULL ? strdup(text) : NULL;
}

static char *dup_range(const char *text, size_t len)
{
    char *copy = malloc(len + 1);

    if (copy == NULL)
        return NULL;
    memcpy(copy, text, len);
    copy[len] = '\0';
    return copy;
}

static int has_control_char(const char *text)
{
    for (const unsigned char *p = (const unsigned char *)text; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return 1;
    }
    return 0;
}

/* Length of the endpoint part of a request path: everything before '?'. */
static int endpoint_len(const char *path)
{
    size_t len = strcspn(path, "?");

    return len > INT_MAX ? INT_MAX : (int)len;
}

static uint64_t next_random(struct nomad_client *client)
{
    uint64_t x = client->rng_state;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    client->rng_state = x;
    return x * UINT64_C(2685821657736338717);
}

/*
 * Backoff before retry number `retry` (1 for the first retry): retry_base_ms
 * doubled per retry, then scaled by a random factor in [0.5, 1.5).
 */
static long backoff_ms(struct nomad_client *client, int retry)
{
    double delay = (double)client->retry_base_ms;
    double factor;

    for (int i = 1; i < retry && delay < (double)BACKOFF_MAX_MS; i++)
        delay *= 2.0;
    if (delay > (double)BACKOFF_MAX_MS)
        delay = (double)BACKOFF_MAX_MS;
    factor = 0.5 + (double)(next_random(client) >> 11) / 9007199254740992.0;
    return (long)(delay * factor);
}

/* ---- nomad_escape ---- */

char *nomad_escape(const char *text)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t len = strlen(text);
    char *out;
    char *w;

    if (len > (SIZE_MAX - 1) / 3)
        return NULL;
    out = malloc(len * 3 + 1);
    if (out == NULL)
        return NULL;

    w = out;
    for (const unsigned char *p = (const unsigned char *)text; *p != '\0'; p++) {
        int unreserved = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                         (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' ||
                         *p == '~';

        if (unreserved) {
            *w++ = (char)*p;
        } else {
            *w++ = '%';
            *w++ = hex[*p >> 4];
            *w++ = hex[*p & 0x0f];
        }
    }
    *w = '\0';
    return out;
}

/* ---- results and responses ---- */

const char *nomad_result_name(enum nomad_result result)
{
    switch (result) {
    case NOMAD_OK:
        return "ok";
    case NOMAD_ERR_TRANSPORT:
        return "transport error";
    case NOMAD_ERR_TIMEOUT:
        return "timeout";
    case NOMAD_ERR_STATUS:
        return "HTTP error status";
    case NOMAD_ERR_TOO_LARGE:
        return "response too large";
    case NOMAD_ERR_NO_LEADER:
        return "no cluster leader";
    case NOMAD_ERR_INTERNAL:
        return "internal error";
    }
    return "unknown result";
}

void nomad_response_init(struct nomad_response *resp)
{
    memset(resp, 0, sizeof(*resp));
    resp->known_leader = -1;
    resp->last_contact_ms = -1;
}

void nomad_response_free(struct nomad_response *resp)
{
    free(resp->body);
    free(resp->next_token);
    nomad_response_init(resp);
}

/* Drop what one attempt left in resp, keeping attempts and elapsed_s. */
static void clear_attempt(struct nomad_response *resp)
{
    int attempts = resp->attempts;
    double elapsed_s = resp->elapsed_s;

    nomad_response_free(resp);
    resp->attempts = attempts;
    resp->elapsed_s = elapsed_s;
}

/* ---- address parsing ---- */

/*
 * Copy an address for an error message with any userinfo replaced by "***",
 * because "http://user:password@host" carries a secret.
 */
static void redact_address(const char *address, char *out, size_t outsz)
{
    const char *authority = strstr(address, "://");
    const char *at;
    size_t authority_len;

    if (authority == NULL) {
        snprintf(out, outsz, "%s", address);
        return;
    }
    authority += 3;
    authority_len = strcspn(authority, "/?#");
    at = memchr(authority, '@', authority_len);
    if (at == NULL) {
        snprintf(out, outsz, "%s", address);
        return;
    }
    /* The last '@' ends the userinfo, because a password may itself contain '@'. */
    for (const char *p = at; p < authority + authority_len; p++) {
        if (*p == '@')
            at = p;
    }
    snprintf(out, outsz, "%.*s***%s", (int)(authority - address), address, at);
}

static int is_hostname(const char *name)
{
    if (name[0] == '\0')
        return 0;
    for (const char *p = name; *p != '\0'; p++) {
        int ok = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                 (*p >= '0' && *p <= '9') || *p == '-' || *p == '.';

        if (!ok)
            return 0;
    }
    return 1;
}

static int parse_unix_address(struct nomad_client *client, const char *address, char *err,
                              size_t errsz)
{
    const char *socket_path = address + strlen("unix://");

    if (socket_path[0] == '\0') {
        snprintf(err, errsz, "invalid Nomad address \"%s\": missing socket path; expected unix:///path/to/socket",
                 address);
        return -1;
    }
    client->unix_socket = strdup(socket_path);
    client->local = 1;
    client->address = strdup(address);
    /* The host name is not used to connect, only sent in the Host header. */
    client->base_url = strdup("http://localhost");
    if (client->unix_socket == NULL || client->address == NULL || client->base_url == NULL) {
        snprintf(err, errsz, "out of memory while creating the Nomad client");
        return -1;
    }
    return 0;
}

/*
 * Return 1 for "localhost" (with or without the final dot), an IPv4 address
 * in 127.0.0.0/8, and [::1] or [::ffff:127.x.y.z], as libcurl's URL parser
 * writes hosts. Other names count as remote, even when they resolve to
 * loopback.
 */
static int is_local_host(const char *host)
{
    struct in_addr v4;
    struct in6_addr v6;
    char bare[INET6_ADDRSTRLEN + 1];
    size_t len = strlen(host);

    if (strcasecmp(host, "localhost") == 0 || strcasecmp(host, "localhost.") == 0)
        return 1;
    if (inet_pton(AF_INET, host, &v4) == 1)
        return (ntohl(v4.s_addr) >> 24) == 127;
    if (len < 3 || host[0] != '[' || host[len - 1] != ']' || len - 2 >= sizeof(bare))
        return 0;
    memcpy(bare, host + 1, len - 2);
    bare[len - 2] = '\0';
    if (inet_pton(AF_INET6, bare, &v6) != 1)
        return 0;
    if (IN6_IS_ADDR_LOOPBACK(&v6))
        return 1;
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
}

/*
 * Fill the URL parts of client from an http:// or https:// address. Userinfo
 * becomes the Basic credentials unless cfg->http_auth already set them.
 */
static int parse_http_address(struct nomad_client *client, const struct nomad_conn_config *cfg,
                              const char *shown, char *err, size_t errsz)
{
    CURLU *url = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *explicit_port = NULL;
    char *user = NULL, *password = NULL, *path = NULL, *query = NULL, *fragment = NULL;
    size_t size;
    int rc = -1;

    if (url == NULL) {
        snprintf(err, errsz, "out of memory while creating the Nomad client");
        goto out;
    }
    if (curl_url_set(url, CURLUPART_URL, cfg->address, 0) != CURLUE_OK ||
        curl_url_get(url, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(url, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(url, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
        snprintf(err, errsz, "invalid Nomad address \"%s\": expected http://host:port, https://host:port or unix:///path",
                 shown);
        goto out;
    }
    curl_url_get(url, CURLUPART_PORT, &explicit_port, 0);
    curl_url_get(url, CURLUPART_USER, &user, CURLU_URLDECODE);
    curl_url_get(url, CURLUPART_PASSWORD, &password, CURLU_URLDECODE);
    curl_url_get(url, CURLUPART_PATH, &path, 0);
    curl_url_get(url, CURLUPART_QUERY, &query, 0);
    curl_url_get(url, CURLUPART_FRAGMENT, &fragment, 0);

    if ((path != NULL && strcmp(path, "/") != 0) || query != NULL || fragment != NULL) {
        snprintf(err, errsz, "invalid Nomad address \"%s\": the API is served at the root, so remove the path, query or fragment",
                 shown);
        goto out;
    }

    client->https = strcmp(scheme, "https") == 0;
    client->local = is_local_host(host);
    client->address = malloc(strlen(scheme) + strlen(host) + 32);
    if (client->address == NULL)
        goto oom;
    sprintf(client->address, "%s://%s%s%s", scheme, host, explicit_port != NULL ? ":" : "",
            explicit_port != NULL ? explicit_port : "");

    if (client->https && cfg->tls_server_name != NULL && cfg->tls_server_name[0] != '\0') {
        char *entry;

        /*
         * libcurl 7.88 has no option that sets the TLS SNI name on its own.
         * Putting the server name in the URL and routing every connection to
         * the real host with CURLOPT_CONNECT_TO makes libcurl send it as SNI
         * and verify the certificate against it.
         * NOTE: the Host header then carries the server name as well, while
         * the Go client keeps the address's host there.
         */
        if (!is_hostname(cfg->tls_server_name)) {
            snprintf(err, errsz, "invalid TLS server name \"%s\" (NOMAD_TLS_SERVER_NAME): expected a DNS name such as server.global.nomad",
                     cfg->tls_server_name);
            goto out;
        }
        size = strlen(cfg->tls_server_name) + strlen(port) + 16;
        client->base_url = malloc(size);
        entry = malloc(strlen(host) + strlen(port) + 8);
        if (client->base_url == NULL || entry == NULL) {
            free(entry);
            goto oom;
        }
        snprintf(client->base_url, size, "https://%s:%s", cfg->tls_server_name, port);
        sprintf(entry, "::%s:%s", host, port);
        client->connect_to = curl_slist_append(NULL, entry);
        free(entry);
        if (client->connect_to == NULL)
            goto oom;
    } else {
        size = strlen(scheme) + strlen(host) + strlen(port) + 8;
        client->base_url = malloc(size);
        if (client->base_url == NULL)
            goto oom;
        snprintf(client->base_url, size, "%s://%s:%s", scheme, host, port);
    }

    if (client->username == NULL && user != NULL) {
        client->username = strdup(user);
        client->password = strdup(password != NULL ? password : "");
        if (client->username == NULL || client->password == NULL)
            goto oom;
    }
    rc = 0;
    goto out;

oom:
    snprintf(err, errsz, "out of memory while creating the Nomad client");
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(explicit_port);
    curl_free(user);
    curl_free(password);
    curl_free(path);
    curl_free(query);
    curl_free(fragment);
    curl_url_cleanup(url);
    return rc;
}

static int parse_address(struct nomad_client *client, const struct nomad_conn_config *cfg,
                         char *err, size_t errsz)
{
    const char *address = cfg->address != NULL ? cfg->address : "http://127.0.0.1:4646";
    const char *separator = strstr(address, "://");
    char shown[256];
    size_t scheme_len;

    redact_address(address, shown, sizeof(shown));
    if (separator == NULL) {
        snprintf(err, errsz, "invalid Nomad address \"%s\": missing scheme; expected http://host:port, https://host:port or unix:///path",
                 shown);
        return -1;
    }
    scheme_len = (size_t)(separator - address);
    if (scheme_len == 4 && strncasecmp(address, "unix", 4) == 0)
        return parse_unix_address(client, address, err, errsz);
    if (!((scheme_len == 4 && strncasecmp(address, "http", 4) == 0) ||
          (scheme_len == 5 && strncasecmp(address, "https", 5) == 0))) {
        snprintf(err, errsz, "unsupported scheme \"%.*s\" in Nomad address \"%s\": use http://, https:// or unix://",
                 (int)scheme_len, address, shown);
        return -1;
    }
    return parse_http_address(client, cfg, shown, err, errsz);
}

/* ---- client construction ---- */

/* Split "user" or "user:password" (NOMAD_HTTP_AUTH) into the Basic credentials. */
static int parse_http_auth(struct nomad_client *client, const char *auth)
{
    const char *colon = strchr(auth, ':');

    if (colon == NULL) {
        client->username = strdup(auth);
        client->password = strdup("");
    } else {
        client->username = dup_range(auth, (size_t)(colon - auth));
        client->password = strdup(colon + 1);
    }
    return client->username != NULL && client->password != NULL ? 0 : -1;
}

/* Check that a TLS file or directory named in the settings is readable now, not at the first request. */
static int check_readable(const char *path, int want_dir, const char *what, const char *setting,
                          char *err, size_t errsz)
{
    struct stat st;

    if (path == NULL || path[0] == '\0')
        return 0;
    if (stat(path, &st) != 0 || access(path, R_OK) != 0) {
        snprintf(err, errsz, "cannot read %s \"%s\" (%s): %s", what, path, setting, strerror(errno));
        return -1;
    }
    if (want_dir && !S_ISDIR(st.st_mode)) {
        snprintf(err, errsz, "%s \"%s\" (%s) is not a directory", what, path, setting);
        return -1;
    }
    if (!want_dir && S_ISDIR(st.st_mode)) {
        snprintf(err, errsz, "%s \"%s\" (%s) is a directory; expected a PEM file", what, path,
                 setting);
        return -1;
    }
    return 0;
}

static int check_settings(const struct nomad_conn_config *cfg, char *err, size_t errsz)
{
    if (cfg->connect_timeout_ms <= 0 || cfg->request_timeout_ms <= 0) {
        snprintf(err, errsz, "invalid Nomad timeouts (connect %ld ms, request %ld ms): both must be positive",
                 cfg->connect_timeout_ms, cfg->request_timeout_ms);
        return -1;
    }
    if (cfg->max_retries < 0 || cfg->retry_base_ms < 0) {
        snprintf(err, errsz, "invalid Nomad retry settings (max_retries %d, retry_base_ms %ld): neither may be negative",
                 cfg->max_retries, cfg->retry_base_ms);
        return -1;
    }
    if (cfg->max_response_bytes == 0 || cfg->max_response_bytes >= SIZE_MAX / 2) {
        snprintf(err, errsz, "invalid maximum Nomad response size %zu bytes (nomad.max_response_size): expected a positive size",
                 cfg->max_response_bytes);
        return -1;
    }
    if (cfg->max_connections < 1) {
        snprintf(err, errsz, "invalid Nomad max_connections %d: expected at least 1",
                 cfg->max_connections);
        return -1;
    }
    if (cfg->token != NULL && has_control_char(cfg->token)) {
        /* The token itself stays out of the message. */
        snprintf(err, errsz, "invalid Nomad ACL token (NOMAD_TOKEN): it contains a control character, often a trailing newline; remove it");
        return -1;
    }
    if (cfg->http_auth != NULL && has_control_char(cfg->http_auth)) {
        snprintf(err, errsz, "invalid HTTP Basic credentials (NOMAD_HTTP_AUTH): they contain a control character; remove it");
        return -1;
    }
    if (check_readable(cfg->ca_cert, 0, "CA certificate file", "NOMAD_CACERT", err, errsz) != 0 ||
        check_readable(cfg->ca_path, 1, "CA certificate directory", "NOMAD_CAPATH", err, errsz) != 0 ||
        check_readable(cfg->client_cert, 0, "client certificate", "NOMAD_CLIENT_CERT", err, errsz) != 0 ||
        check_readable(cfg->client_key, 0, "client key", "NOMAD_CLIENT_KEY", err, errsz) != 0)
        return -1;
    return 0;
}

/* Build the two fixed header lists; only they ever hold the token. */
static int build_headers(struct nomad_client *client, const char *token)
{
    struct curl_slist *list = NULL;
    struct curl_slist *next;
    char *line = NULL;

    if (token != NULL && token[0] != '\0') {
        line = malloc(strlen(token) + sizeof("X-Nomad-Token: "));
        if (line == NULL)
            return -1;
        sprintf(line, "X-Nomad-Token: %s", token);
    }

    for (int write = 0; write <= 1; write++) {
        list = NULL;
        if (line != NULL) {
            list = curl_slist_append(list, line);
            if (list == NULL)
                goto fail;
        }
        /* An empty "Expect:" stops libcurl from waiting for 100-continue before large bodies. */
        next = curl_slist_append(list, "Expect:");
        if (next == NULL)
            goto fail;
        list = next;
        if (write) {
            next = curl_slist_append(list, "Content-Type: application/json");
            if (next == NULL)
                goto fail;
            list = next;
            client->write_headers = list;
        } else {
            client->read_headers = list;
        }
    }
    free(line);
    return 0;

fail:
    curl_slist_free_all(list);
    free(line);
    return -1;
}

static int init_transfer(struct transfer *xfer, size_t body_max)
{
    memset(xfer, 0, sizeof(*xfer));
    xfer->body_max = body_max;
    xfer->known_leader = -1;
    xfer->last_contact_ms = -1;
    xfer->slot = SLOT_IDLE;
    xfer->easy = curl_easy_init();
    return xfer->easy != NULL ? 0 : -1;
}

static void free_transfer(struct transfer *xfer)
{
    if (xfer->easy != NULL)
        curl_easy_cleanup(xfer->easy);
    free(xfer->body);
    free(xfer->next_token);
    memset(xfer, 0, sizeof(*xfer));
}

struct nomad_client *nomad_client_new(const struct nomad_conn_config *cfg, char *err, size_t errsz)
{
    struct nomad_client *client = NULL;
    struct timespec now;

    pthread_once(&global_init_once, global_init);
    if (global_init_result != CURLE_OK) {
        snprintf(err, errsz, "libcurl initialisation failed: %s",
                 curl_easy_strerror(global_init_result));
        return NULL;
    }
    if (check_settings(cfg, err, errsz) != 0)
        return NULL;

    client = calloc(1, sizeof(*client));
    if (client == NULL)
        goto oom;

    /* Explicit NOMAD_HTTP_AUTH wins over userinfo in the address, as in the Go API client. */
    if (cfg->http_auth != NULL && cfg->http_auth[0] != '\0' &&
        parse_http_auth(client, cfg->http_auth) != 0)
        goto oom;
    if (parse_address(client, cfg, err, errsz) != 0)
        goto fail;

    if (cfg->region != NULL && cfg->region[0] != '\0') {
        char *escaped = nomad_escape(cfg->region);

        if (escaped == NULL)
            goto oom;
        client->region_param = malloc(strlen(escaped) + sizeof("region="));
        if (client->region_param == NULL) {
            free(escaped);
            goto oom;
        }
        sprintf(client->region_param, "region=%s", escaped);
        free(escaped);
    }

    client->ca_cert = dup_or_null(cfg->ca_cert);
    client->ca_path = dup_or_null(cfg->ca_path);
    client->client_cert = dup_or_null(cfg->client_cert);
    client->client_key = dup_or_null(cfg->client_key);
    if ((cfg->ca_cert != NULL && client->ca_cert == NULL) ||
        (cfg->ca_path != NULL && client->ca_path == NULL) ||
        (cfg->client_cert != NULL && client->client_cert == NULL) ||
        (cfg->client_key != NULL && client->client_key == NULL))
        goto oom;
    client->skip_verify = cfg->skip_verify;

    client->connect_timeout_ms = cfg->connect_timeout_ms;
    client->request_timeout_ms = cfg->request_timeout_ms;
    client->max_retries = cfg->max_retries;
    client->retry_base_ms = cfg->retry_base_ms;
    client->max_response_bytes = cfg->max_response_bytes;
    client->max_connections = cfg->max_connections;
    client->compress = cfg->compression == NOMAD_COMPRESSION_ON ||
                       (cfg->compression == NOMAD_COMPRESSION_AUTO && !client->local);

    if (build_headers(client, cfg->token) != 0)
        goto oom;
    if (init_transfer(&client->single, client->max_response_bytes) != 0)
        goto oom;

    clock_gettime(CLOCK_REALTIME, &now);
    client->rng_state = ((uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec) ^
                        ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)client;
    if (client->rng_state == 0)
        client->rng_state = 1;
    return client;

oom:
    snprintf(err, errsz, "out of memory while creating the Nomad client");
fail:
    nomad_client_free(client);
    return NULL;
}

void nomad_client_free(struct nomad_client *client)
{
    if (client == NULL)
        return;

    if (client->pool != NULL) {
        for (int i = 0; i < client->max_connections; i++)
            free_transfer(&client->pool[i]);
        free(client->pool);
    }
    if (client->multi != NULL)
        curl_multi_cleanup(client->multi);
    free_transfer(&client->single);

    free(client->address);
    free(client->base_url);
    free(client->unix_socket);
    curl_slist_free_all(client->connect_to);
    free(client->region_param);
    free(client->username);
    free(client->password);
    free(client->ca_cert);
    free(client->ca_path);
    free(client->client_cert);
    free(client->client_key);
    curl_slist_free_all(client->read_headers);
    curl_slist_free_all(client->write_headers);
    free(client);
}

void nomad_client_set_observer(struct nomad_client *client, nomad_observer_fn observer, void *ctx)
{
    client->observer = observer;
    client->observer_ctx = ctx;
}

int nomad_client_compresses(const struct nomad_client *client)
{
    return client->compress;
}

const char *nomad_client_address(const struct nomad_client *client)
{
    return client->address;
}

/* ---- request preparation ---- */

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode %XX sequences of a query value into out (at most outsz - 1 bytes). */
static void percent_decode(const char *text, size_t len, char *out, size_t outsz)
{
    size_t w = 0;

    for (size_t i = 0; i < len && w + 1 < outsz; i++) {
        if (text[i] == '%' && i + 2 < len && hex_value(text[i + 1]) >= 0 &&
            hex_value(text[i + 2]) >= 0) {
            out[w++] = (char)(hex_value(text[i + 1]) * 16 + hex_value(text[i + 2]));
            i += 2;
        } else {
            out[w++] = text[i];
        }
    }
    out[w] = '\0';
}

/*
 * Parse a Go time.ParseDuration string ("30s", "1m30s", "1.5h", "250ms") into
 * milliseconds. Returns 0, or -1 when text is not a duration.
 */
static int parse_go_duration_ms(const char *text, double *out_ms)
{
    static const struct {
        const char *unit;
        double ms;
    } units[] = {
        {"ns", 1e-6}, {"us", 1e-3}, {"\xc2\xb5s", 1e-3}, {"\xce\xbcs", 1e-3},
        {"ms", 1.0},  {"s", 1e3},   {"m", 60e3},         {"h", 3600e3},
    };
    const char *p = text;
    double total = 0.0;
    int negative = 0;

    if (*p == '-' || *p == '+')
        negative = *p++ == '-';
    if (strcmp(p, "0") == 0) {
        *out_ms = 0.0;
        return 0;
    }
    if (*p == '\0')
        return -1;

    while (*p != '\0') {
        char *end;
        double value;
        size_t best = 0;
        double scale = 0.0;

        if (!((*p >= '0' && *p <= '9') || *p == '.'))
            return -1;
        value = strtod(p, &end);
        if (end == p)
            return -1;
        p = end;
        /* Longest unit first, so "ms" is not read as "m" followed by "s". */
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            size_t len = strlen(units[i].unit);

            if (len > best && strncmp(p, units[i].unit, len) == 0) {
                best = len;
                scale = units[i].ms;
            }
        }
        if (best == 0)
            return -1;
        p += best;
        total += value * scale;
    }
    *out_ms = negative ? -total : total;
    return 0;
}

/*
 * Find a query parameter of path. Copies its percent-decoded value into out
 * and returns 1, or returns 0 when absent.
 */
static int query_param(const char *path, const char *name, char *out, size_t outsz)
{
    const char *p = strchr(path, '?');
    size_t name_len = strlen(name);

    if (p == NULL)
        return 0;
    p++;
    while (*p != '\0') {
        size_t len = strcspn(p, "&");

        if (len >= name_len && strncmp(p, name, name_len) == 0 &&
            (len == name_len || p[name_len] == '=')) {
            const char *value = len == name_len ? p + len : p + name_len + 1;

            percent_decode(value, (size_t)(p + len - value), out, outsz);
            return 1;
        }
        p += len;
        if (*p == '&')
            p++;
    }
    return 0;
}

/*
 * Request timeout for path. The server may hold a query with wait= for that
 * long plus up to wait/16 of jitter, so the timeout becomes
 * wait * 17/16 + request_timeout_ms. A blocking query (index > 0) without a
 * positive wait gets the server's default wait of 300 s.
 */
static long request_timeout_for(const struct nomad_client *client, const char *path)
{
    char value[64];
    double wait_ms = 0.0;
    double timeout;
    int has_wait = query_param(path, "wait", value, sizeof(value));

    if (has_wait && parse_go_duration_ms(value, &wait_ms) != 0)
        return client->request_timeout_ms;  /* the server rejects it at once with 400 "Invalid wait time" */
    if (wait_ms <= 0.0 && query_param(path, "index", value, sizeof(value)) &&
        strtoull(value, NULL, 10) > 0)
        wait_ms = DEFAULT_BLOCKING_WAIT_MS;
    if (wait_ms <= 0.0)
        return client->request_timeout_ms;
    if (wait_ms > MAX_BLOCKING_WAIT_MS)
        wait_ms = MAX_BLOCKING_WAIT_MS;
    timeout = wait_ms * 17.0 / 16.0 + (double)client->request_timeout_ms;
    return timeout >= (double)LONG_MAX ? LONG_MAX : (long)timeout;
}

/*
 * Build the full URL for path: base URL, path, and region= unless the path
 * already names a region. Returns a malloc'd string or NULL.
 */
static char *build_url(const struct nomad_client *client, const char *path)
{
    char unused[8];
    int add_region = client->region_param != NULL &&
                     !query_param(path, "region", unused, sizeof(unused));
    size_t size = strlen(client->base_url) + strlen(path) + 2 +
                  (add_region ? strlen(client->region_param) : 0);
    char *url = malloc(size);

    if (url == NULL)
        return NULL;
    if (add_region)
        snprintf(url, size, "%s%s%c%s", client->base_url, path,
                 strchr(path, '?') != NULL ? '&' : '?', client->region_param);
    else
        snprintf(url, size, "%s%s", client->base_url, path);
    return url;
}

/* Check method and path before anything is sent. Fills resp on failure. */
static int check_request(const char *method, const char *path, struct nomad_response *resp)
{
    static const char *const methods[] = {"GET", "PUT", "POST", "DELETE"};
    int known = 0;

    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        known |= method != NULL && strcmp(method, methods[i]) == 0;
    if (!known) {
        resp->result = NOMAD_ERR_INTERNAL;
        snprintf(resp->error, sizeof(resp->error), "unsupported HTTP method \"%s\": use GET, PUT, POST or DELETE",
                 method != NULL ? method : "(null)");
        return -1;
    }
    if (path == NULL || path[0] != '/' || strpbrk(path, " #") != NULL || has_control_char(path)) {
        resp->result = NOMAD_ERR_INTERNAL;
        snprintf(resp->error, sizeof(resp->error), "%s: invalid request path \"%.200s\": expected /v1/... with escaped query values",
                 method, path != NULL ? path : "(null)");
        return -1;
    }
    return 0;
}

/* ---- libcurl callbacks ---- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct transfer *xfer = userdata;
    size_t len = size * nmemb;

    if (len > xfer->body_max - xfer->body_len) {
        xfer->too_large = 1;
        return 0;
    }
    if (xfer->body_len + len + 1 > xfer->body_cap) {
        size_t cap = xfer->body_cap;
        char *grown;

        if (cap == 0) {
            /*
             * Size the first buffer from Content-Length, which is exact for an
             * uncompressed body and a lower bound for a compressed one. A
             * fixed large start would make thousands of small 404 bodies
             * (allocation lookups) hold megabytes at once.
             */
            curl_off_t announced = -1;

            curl_easy_getinfo(xfer->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &announced);
            cap = 256;
            if (announced > 0 && (uint64_t)announced < xfer->body_max)
                cap = (size_t)announced + 1 > cap ? (size_t)announced + 1 : cap;
        }

        while (cap < xfer->body_len + len + 1)
            cap *= 2;
        if (cap > xfer->body_max + 1)
            cap = xfer->body_max + 1;
        grown = realloc(xfer->body, cap);
        if (grown == NULL) {
            xfer->out_of_memory = 1;
            return 0;
        }
        xfer->body = grown;
        xfer->body_cap = cap;
    }
    memcpy(xfer->body + xfer->body_len, data, len);
    xfer->body_len += len;
    xfer->body[xfer->body_len] = '\0';
    return len;
}

static void reset_meta(struct transfer *xfer)
{
    xfer->index = 0;
    xfer->known_leader = -1;
    xfer->last_contact_ms = -1;
    free(xfer->next_token);
    xfer->next_token = NULL;
}

static int header_is(const char *name, size_t name_len, const char *expected)
{
    return name_len == strlen(expected) && strncasecmp(name, expected, name_len) == 0;
}

/*
 * Record the X-Nomad-* headers. Go canonicalises their names on the wire
 * (X-Nomad-Knownleader), so names compare case-insensitively. Each status
 * line starts a new response head (an interim 1xx, or another attempt), and
 * only the last head's values count.
 */
static size_t on_header(char *data, size_t size, size_t nitems, void *userdata)
{
    struct transfer *xfer = userdata;
    size_t len = size * nitems;
    const char *colon;
    const char *value;
    size_t name_len, value_len;
    char number[32];

    if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        reset_meta(xfer);
        return len;
    }
    colon = memchr(data, ':', len);
    if (colon == NULL)
        return len;
    name_len = (size_t)(colon - data);
    value = colon + 1;
    value_len = len - name_len - 1;
    while (value_len > 0 && (*value == ' ' || *value == '\t')) {
        value++;
        value_len--;
    }
    while (value_len > 0 && (value[value_len - 1] == '\r' || value[value_len - 1] == '\n' ||
                             value[value_len - 1] == ' ' || value[value_len - 1] == '\t'))
        value_len--;

    if (header_is(data, name_len, "X-Nomad-NextToken")) {
        free(xfer->next_token);
        xfer->next_token = value_len > 0 ? dup_range(value, value_len) : NULL;
        if (value_len > 0 && xfer->next_token == NULL) {
            xfer->out_of_memory = 1;
            return 0;
        }
        return len;
    }
    if (value_len == 0 || value_len >= sizeof(number))
        return len;
    memcpy(number, value, value_len);
    number[value_len] = '\0';

    if (header_is(data, name_len, "X-Nomad-Index")) {
        char *end;
        unsigned long long parsed;

        errno = 0;
        parsed = strtoull(number, &end, 10);
        if (errno == 0 && *end == '\0' && number[0] >= '0' && number[0] <= '9')
            xfer->index = (uint64_t)parsed;
    } else if (header_is(data, name_len, "X-Nomad-KnownLeader")) {
        if (strcasecmp(number, "true") == 0)
            xfer->known_leader = 1;
        else if (strcasecmp(number, "false") == 0)
            xfer->known_leader = 0;
    } else if (header_is(data, name_len, "X-Nomad-LastContact")) {
        char *end;
        long parsed;

        errno = 0;
        parsed = strtol(number, &end, 10);
        if (errno == 0 && *end == '\0' && parsed >= 0)
            xfer->last_contact_ms = parsed;
    }
    return len;
}

/* Forget the previous response so this transfer can receive a new one. */
static void reset_transfer(struct transfer *xfer)
{
    free(xfer->body);
    xfer->body = NULL;
    xfer->body_len = 0;
    xfer->body_cap = 0;
    xfer->too_large = 0;
    xfer->out_of_memory = 0;
    xfer->errbuf[0] = '\0';
    reset_meta(xfer);
}

#define SETOPT(easy, option, value)                                 \
    do {                                                            \
        if (curl_easy_setopt((easy), (option), (value)) != CURLE_OK) \
            return -1;                                              \
    } while (0)

static int set_tls_options(const struct nomad_client *client, CURL *easy)
{
    SETOPT(easy, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    SETOPT(easy, CURLOPT_SSL_VERIFYPEER, client->skip_verify ? 0L : 1L);
    SETOPT(easy, CURLOPT_SSL_VERIFYHOST, client->skip_verify ? 0L : 2L);
    if (client->ca_cert != NULL && client->ca_cert[0] != '\0')
        SETOPT(easy, CURLOPT_CAINFO, client->ca_cert);
    if (client->ca_path != NULL && client->ca_path[0] != '\0')
        SETOPT(easy, CURLOPT_CAPATH, client->ca_path);
    if (client->client_cert != NULL && client->client_cert[0] != '\0')
        SETOPT(easy, CURLOPT_SSLCERT, client->client_cert);
    if (client->client_key != NULL && client->client_key[0] != '\0')
        SETOPT(easy, CURLOPT_SSLKEY, client->client_key);
    if (client->connect_to != NULL)
        SETOPT(easy, CURLOPT_CONNECT_TO, client->connect_to);
    return 0;
}

/*
 * Configure xfer's easy handle for one request. The strings url and body must
 * outlive the transfer. Returns 0, or -1 when libcurl rejects an option.
 */
static int setup_transfer(const struct nomad_client *client, struct transfer *xfer,
                          const char *method, const char *url, const char *body,
                          long timeout_ms)
{
    CURL *easy = xfer->easy;
    int is_get = strcmp(method, "GET") == 0;

    curl_easy_reset(easy);
    reset_transfer(xfer);

    /* Verbose output would print the X-Nomad-Token header; keep it off. */
    SETOPT(easy, CURLOPT_VERBOSE, 0L);
    SETOPT(easy, CURLOPT_URL, url);
    SETOPT(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(easy, CURLOPT_FOLLOWLOCATION, 0L);
    /*
     * CURLOPT_NOSIGNAL stays 0, so libcurl ignores SIGPIPE while it runs and
     * a TLS write to a connection the agent closed cannot kill the process.
     */
    SETOPT(easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    if (client->compress)
        SETOPT(easy, CURLOPT_ACCEPT_ENCODING, "");
    SETOPT(easy, CURLOPT_USERAGENT, "nomad-medic/" NOMAD_MEDIC_VERSION);
    SETOPT(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    SETOPT(easy, CURLOPT_CONNECTTIMEOUT_MS, client->connect_timeout_ms);
    SETOPT(easy, CURLOPT_TIMEOUT_MS, timeout_ms);
    SETOPT(easy, CURLOPT_ERRORBUFFER, xfer->errbuf);
    SETOPT(easy, CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(easy, CURLOPT_WRITEDATA, xfer);
    SETOPT(easy, CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(easy, CURLOPT_HEADERDATA, xfer);
    SETOPT(easy, CURLOPT_PRIVATE, xfer);
    SETOPT(easy, CURLOPT_HTTPHEADER, is_get ? client->read_headers : client->write_headers);

    if (client->unix_socket != NULL)
        SETOPT(easy, CURLOPT_UNIX_SOCKET_PATH, client->unix_socket);
    if (client->username != NULL) {
        SETOPT(easy, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        SETOPT(easy, CURLOPT_USERNAME, client->username);
        SETOPT(easy, CURLOPT_PASSWORD, client->password);
    }
    if (client->https && set_tls_options(client, easy) != 0)
        return -1;

    if (is_get) {
        SETOPT(easy, CURLOPT_HTTPGET, 1L);
    } else {
        SETOPT(easy, CURLOPT_CUSTOMREQUEST, method);
        if (body != NULL || strcmp(method, "DELETE") != 0) {
            /* PUT and POST always carry a body, possibly empty ("Content-Length: 0"). */
            SETOPT(easy, CURLOPT_POSTFIELDS, body != NULL ? body : "");
            SETOPT(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body != NULL ? strlen(body) : 0));
        }
    }
    return 0;
}

#undef SETOPT

/* ---- classification ---- */

/*
 * Quote the start of Nomad's plain-text error body: control characters
 * become spaces, runs of spaces collapse, at most ERROR_EXCERPT_MAX characters.
 */
static void body_excerpt(const char *body, size_t body_len, char *out, size_t outsz)
{
    size_t w = 0;
    size_t limit = outsz - 1 < ERROR_EXCERPT_MAX ? outsz - 1 : ERROR_EXCERPT_MAX;
    int pending_space = 0;

    for (size_t i = 0; body != NULL && i < body_len && w < limit; i++) {
        unsigned char c = (unsigned char)body[i];

        if (c < 0x20 || c == 0x7f || c == ' ') {
            pending_space = w > 0;
            continue;
        }
        if (pending_space && w + 1 < limit) {
            out[w++] = ' ';
        }
        pending_space = 0;
        out[w++] = (char)c;
    }
    if (w == limit && body != NULL && body_len > limit && w >= 3)
        memcpy(out + w - 3, "...", 3);
    out[w] = '\0';
}

static int is_no_leader_body(const char *body)
{
    return body != NULL && strstr(body, "No cluster leader") != NULL;
}

/*
 * Turn the outcome of one attempt into resp: result, status, body, X-Nomad-*
 * values and the error text. Ownership of the body moves from xfer to resp.
 */
static void finish_attempt(const struct nomad_client *client, struct transfer *xfer,
                           const char *method, const char *path, CURLcode code, long timeout_ms,
                           struct nomad_response *resp)
{
    int path_len = endpoint_len(path);
    const char *curl_text = xfer->errbuf[0] != '\0' ? xfer->errbuf : curl_easy_strerror(code);
    char excerpt[ERROR_EXCERPT_MAX + 1];
    long status = 0;

    clear_attempt(resp);
    curl_easy_getinfo(xfer->easy, CURLINFO_RESPONSE_CODE, &status);
    resp->status = status;

    if (code != CURLE_OK) {
        if (xfer->too_large) {
            resp->result = NOMAD_ERR_TOO_LARGE;
            snprintf(resp->error, sizeof(resp->error),
                     "%s %.*s: response body exceeds the limit of %zu bytes; raise nomad.max_response_size or narrow the request (filter, per_page)",
                     method, path_len, path, client->max_response_bytes);
        } else if (xfer->out_of_memory || code == CURLE_OUT_OF_MEMORY) {
            resp->result = NOMAD_ERR_INTERNAL;
            snprintf(resp->error, sizeof(resp->error), "%s %.*s: out of memory while receiving the response",
                     method, path_len, path);
        } else if (code == CURLE_OPERATION_TIMEDOUT) {
            resp->result = NOMAD_ERR_TIMEOUT;
            snprintf(resp->error, sizeof(resp->error),
                     "%s %.*s: timed out after %ld ms at %s (%s); check the agent's load or raise the request timeout",
                     method, path_len, path, timeout_ms, client->address, curl_text);
        } else {
            resp->result = NOMAD_ERR_TRANSPORT;
            snprintf(resp->error, sizeof(resp->error),
                     "%s %.*s: request to %s failed: %s; check the address and that the agent is reachable",
                     method, path_len, path, client->address, curl_text);
        }
        return;
    }

    /* A complete response: hand the body and the X-Nomad-* values over. */
    resp->body = xfer->body != NULL ? xfer->body : strdup("");
    resp->body_len = xfer->body_len;
    xfer->body = NULL;
    xfer->body_len = 0;
    xfer->body_cap = 0;
    resp->index = xfer->index;
    resp->known_leader = xfer->known_leader;
    resp->last_contact_ms = xfer->last_contact_ms;
    resp->next_token = xfer->next_token;
    xfer->next_token = NULL;
    if (resp->body == NULL) {
        resp->result = NOMAD_ERR_INTERNAL;
        snprintf(resp->error, sizeof(resp->error), "%s %.*s: out of memory while receiving the response",
                 method, path_len, path);
        return;
    }

    if (status >= 200 && status < 300) {
        if (strcmp(method, "GET") == 0 && resp->known_leader == 0) {
            resp->result = NOMAD_ERR_NO_LEADER;
            snprintf(resp->error, sizeof(resp->error),
                     "%s %.*s: status %ld with X-Nomad-KnownLeader false, so the data may be stale; do not act on it until the cluster has a leader",
                     method, path_len, path, status);
            return;
        }
        resp->result = NOMAD_OK;
        return;
    }

    body_excerpt(resp->body, resp->body_len, excerpt, sizeof(excerpt));
    resp->result = status == 500 && is_no_leader_body(resp->body) ? NOMAD_ERR_NO_LEADER
                                                                   : NOMAD_ERR_STATUS;
    if (status == 403)
        snprintf(resp->error, sizeof(resp->error), "%s %.*s: status 403: %s; check that NOMAD_TOKEN "
                 "(or nomad.token) is set and that its ACL policy allows this endpoint", method,
                 path_len, path, excerpt[0] != '\0' ? excerpt : "Permission denied");
    else if (excerpt[0] != '\0')
        snprintf(resp->error, sizeof(resp->error), "%s %.*s: status %ld: %s", method, path_len,
                 path, status, excerpt);
    else
        snprintf(resp->error, sizeof(resp->error), "%s %.*s: status %ld with an empty body",
                 method, path_len, path, status);
}

/*
 * Whether a failed GET may succeed when sent again. Status 4xx other than 429
 * is a definite answer, and so is a 5xx whose text says "not found" (Nomad
 * answers "job not found" or "service registration not found" with 500).
 * Certificate and configuration errors repeat identically, so they are final.
 */
static int is_retryable(const struct nomad_response *resp, CURLcode code)
{
    switch (resp->result) {
    case NOMAD_ERR_TIMEOUT:
        return 1;
    case NOMAD_ERR_TRANSPORT:
        switch (code) {
        case CURLE_UNSUPPORTED_PROTOCOL:
        case CURLE_URL_MALFORMAT:
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CIPHER:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_ISSUER_ERROR:
        case CURLE_SSL_CRL_BADFILE:
            return 0;
        default:
            return 1;
        }
    case NOMAD_ERR_NO_LEADER:
        /* "No cluster leader" (500) can clear after an election, but a 2xx with stale data is a complete response. */
        return resp->status >= 500;
    case NOMAD_ERR_STATUS:
        /* Autopilot returns 429 with its health report when the servers are unhealthy, which is a final result. */
        if (resp->status == 429)
            return resp->body == NULL || strstr(resp->body, "\"Healthy\"") == NULL;
        if (resp->status < 500)
            return 0;
        return resp->body == NULL || strstr(resp->body, "not found") == NULL;
    case NOMAD_OK:
    case NOMAD_ERR_TOO_LARGE:
    case NOMAD_ERR_INTERNAL:
        return 0;
    }
    return 0;
}

/* Tell the observer, if any, about one attempt that was sent. */
static void observe_attempt(const struct nomad_client *client, const char *method, const char *path,
                            const struct nomad_response *resp, double started_s)
{
    if (client->observer != NULL)
        client->observer(client->observer_ctx, method, path, resp->status, resp->result,
                         monotonic_s() - started_s);
}

static void log_retry(const struct nomad_response *resp, int attempt, int max_attempts,
                      long delay_ms)
{
    log_warn(COMPONENT, "%s; retrying in %ld ms (attempt %d of %d failed)", resp->error, delay_ms,
             attempt, max_attempts);
}

/* ---- single requests ---- */

int nomad_request(struct nomad_client *client, const char *method, const char *path,
                  const char *body, struct nomad_response *resp)
{
    double start = monotonic_s();
    char *url = NULL;
    long timeout_ms;
    int max_attempts;

    nomad_response_init(resp);
    if (check_request(method, path, resp) != 0)
        goto out;
    url = build_url(client, path);
    if (url == NULL) {
        resp->result = NOMAD_ERR_INTERNAL;
        snprintf(resp->error, sizeof(resp->error), "%s %.*s: out of memory building the URL",
                 method, endpoint_len(path), path);
        goto out;
    }
    timeout_ms = request_timeout_for(client, path);
    max_attempts = strcmp(method, "GET") == 0 ? 1 + client->max_retries : 1;

    for (int attempt = 1;; attempt++) {
        double attempt_start;
        CURLcode code;
        long delay_ms;

        resp->attempts = attempt;
        if (setup_transfer(client, &client->single, method, url, body, timeout_ms) != 0) {
            clear_attempt(resp);
            resp->result = NOMAD_ERR_INTERNAL;
            snprintf(resp->error, sizeof(resp->error), "%s %.*s: libcurl rejected a transfer option; check that libcurl has HTTP, HTTPS and Unix socket support",
                     method, endpoint_len(path), path);
            break;
        }
        attempt_start = monotonic_s();
        code = curl_easy_perform(client->single.easy);
        finish_attempt(client, &client->single, method, path, code, timeout_ms, resp);
        observe_attempt(client, method, path, resp, attempt_start);
        log_debug(COMPONENT, "%s %.*s: %s status=%ld attempt=%d", method, endpoint_len(path), path,
                  nomad_result_name(resp->result), resp->status, attempt);

        if (resp->result == NOMAD_OK || attempt >= max_attempts || !is_retryable(resp, code))
            break;
        delay_ms = backoff_ms(client, attempt);
        log_retry(resp, attempt, max_attempts, delay_ms);
        sleep_ms(delay_ms);
    }

out:
    free(url);
    resp->elapsed_s = monotonic_s() - start;
    return resp->result == NOMAD_OK ? 0 : -1;
}

int nomad_get(struct nomad_client *client, const char *path, struct nomad_response *resp)
{
    return nomad_request(client, "GET", path, NULL, resp);
}

/* ---- concurrent reads ---- */

/* Progress of one path in nomad_get_many(). */
struct many_state {
    char *url;
    long timeout_ms;
    int attempts;
    int done;
    int waiting;            /* failed, queued for a retry */
    double started_s;       /* start of the first attempt */
    double attempt_started_s;   /* start of the latest attempt */
    double not_before_s;    /* earliest start of the next attempt */
};

/* One nomad_get_many() call. */
struct many_run {
    struct nomad_client *client;
    const char *const *paths;
    struct nomad_response *resps;
    struct many_state *states;
    size_t n;
    size_t next_fresh;      /* paths below this index have been sent at least once */
    size_t remaining;       /* paths not finished */
    size_t waiting;         /* paths queued for a retry */
};

static int ensure_pool(struct nomad_client *client)
{
    if (client->multi != NULL)
        return 0;

    client->pool = calloc((size_t)client->max_connections, sizeof(*client->pool));
    if (client->pool == NULL)
        return -1;
    for (int i = 0; i < client->max_connections; i++) {
        if (init_transfer(&client->pool[i], client->max_response_bytes) != 0)
            goto fail;
    }
    client->multi = curl_multi_init();
    if (client->multi == NULL)
        goto fail;
    if (curl_multi_setopt(client->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
                          (long)client->max_connections) != CURLM_OK ||
        curl_multi_setopt(client->multi, CURLMOPT_MAXCONNECTS,
                          (long)client->max_connections) != CURLM_OK ||
        curl_multi_setopt(client->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_NOTHING) != CURLM_OK)
        goto fail;
    return 0;

fail:
    if (client->multi != NULL)
        curl_multi_cleanup(client->multi);
    client->multi = NULL;
    for (int i = 0; i < client->max_connections; i++)
        free_transfer(&client->pool[i]);
    free(client->pool);
    client->pool = NULL;
    return -1;
}

static void finish_path(struct many_run *run, size_t i)
{
    run->states[i].done = 1;
    run->resps[i].elapsed_s = monotonic_s() - run->states[i].started_s;
    run->remaining--;
}

/*
 * Pick the next path to send: a due retry first, then a path not sent yet.
 * Returns its index, or SLOT_IDLE when none is ready now.
 */
static size_t next_ready(struct many_run *run, double now)
{
    if (run->waiting > 0) {
        for (size_t i = 0; i < run->next_fresh; i++) {
            if (run->states[i].waiting && run->states[i].not_before_s <= now) {
                run->states[i].waiting = 0;
                run->waiting--;
                return i;
            }
        }
    }
    while (run->next_fresh < run->n) {
        size_t i = run->next_fresh++;

        if (!run->states[i].done)
            return i;
    }
    return SLOT_IDLE;
}

/* Milliseconds until the earliest queued retry is due (0 if overdue), or -1 when none waits. */
static long next_retry_in_ms(const struct many_run *run, double now)
{
    double best_s = -1.0;

    if (run->waiting == 0)
        return -1;
    for (size_t i = 0; i < run->next_fresh; i++) {
        const struct many_state *state = &run->states[i];

        if (state->waiting && (best_s < 0.0 || state->not_before_s < best_s))
            best_s = state->not_before_s;
    }
    if (best_s < 0.0)
        return -1;
    return best_s <= now ? 0 : (long)((best_s - now) * 1000.0) + 1;
}

/* Start due requests on idle pool transfers. Returns -1 when the multi handle rejects one. */
static int start_ready(struct many_run *run)
{
    struct nomad_client *client = run->client;
    double now = monotonic_s();

    for (int t = 0; t < client->max_connections; t++) {
        struct transfer *xfer = &client->pool[t];
        struct many_state *state;
        size_t i;

        if (xfer->slot != SLOT_IDLE)
            continue;
        i = next_ready(run, now);
        if (i == SLOT_IDLE)
            return 0;
        state = &run->states[i];

        if (state->attempts == 0)
            state->started_s = now;
        state->attempts++;
        run->resps[i].attempts = state->attempts;
        if (setup_transfer(client, xfer, "GET", state->url, NULL, state->timeout_ms) != 0) {
            clear_attempt(&run->resps[i]);
            run->resps[i].result = NOMAD_ERR_INTERNAL;
            snprintf(run->resps[i].error, sizeof(run->resps[i].error),
                     "GET %.*s: libcurl rejected a transfer option; check that libcurl has HTTP, HTTPS and Unix socket support",
                     endpoint_len(run->paths[i]), run->paths[i]);
            finish_path(run, i);
            t--;    /* this transfer is still idle, so offer it the next path */
            continue;
        }
        if (curl_multi_add_handle(client->multi, xfer->easy) != CURLM_OK)
            return -1;
        state->attempt_started_s = monotonic_s();
        xfer->slot = i;
    }
    return 0;
}

static struct transfer *pool_transfer_of(struct nomad_client *client, CURL *easy)
{
    for (int t = 0; t < client->max_connections; t++) {
        if (client->pool[t].easy == easy)
            return &client->pool[t];
    }
    return NULL;
}

/* Handle every finished transfer: classify it, then finish the path or queue a retry. */
static void collect_done(struct many_run *run)
{
    struct nomad_client *client = run->client;
    int max_attempts = 1 + client->max_retries;
    CURLMsg *msg;
    int queued;

    while ((msg = curl_multi_info_read(client->multi, &queued)) != NULL) {
        struct transfer *xfer;
        struct many_state *state;
        struct nomad_response *resp;
        CURLcode code;
        long delay_ms;
        size_t i;

        if (msg->msg != CURLMSG_DONE)
            continue;
        xfer = pool_transfer_of(client, msg->easy_handle);
        code = msg->data.result;
        curl_multi_remove_handle(client->multi, msg->easy_handle);
        if (xfer == NULL || xfer->slot == SLOT_IDLE)
            continue;
        i = xfer->slot;
        xfer->slot = SLOT_IDLE;
        state = &run->states[i];
        resp = &run->resps[i];

        finish_attempt(client, xfer, "GET", run->paths[i], code, state->timeout_ms, resp);
        observe_attempt(client, "GET", run->paths[i], resp, state->attempt_started_s);
        log_debug(COMPONENT, "GET %.*s: %s status=%ld attempt=%d", endpoint_len(run->paths[i]),
                  run->paths[i], nomad_result_name(resp->result), resp->status, state->attempts);
        if (resp->result == NOMAD_OK || state->attempts >= max_attempts ||
            !is_retryable(resp, code)) {
            finish_path(run, i);
            continue;
        }
        delay_ms = backoff_ms(client, state->attempts);
        log_retry(resp, state->attempts, max_attempts, delay_ms);
        state->waiting = 1;
        state->not_before_s = monotonic_s() + (double)delay_ms / 1000.0;
        run->waiting++;
    }
}

/* Fail every unfinished path after the multi handle itself failed. */
static void abort_run(struct many_run *run, const char *why)
{
    struct nomad_client *client = run->client;

    for (int t = 0; t < client->max_connections; t++) {
        if (client->pool[t].slot != SLOT_IDLE) {
            curl_multi_remove_handle(client->multi, client->pool[t].easy);
            client->pool[t].slot = SLOT_IDLE;
        }
    }
    for (size_t i = 0; i < run->n; i++) {
        if (run->states[i].done)
            continue;
        clear_attempt(&run->resps[i]);
        run->resps[i].result = NOMAD_ERR_INTERNAL;
        snprintf(run->resps[i].error, sizeof(run->resps[i].error),
                 "GET %.*s: libcurl multi interface failed: %s", endpoint_len(run->paths[i]),
                 run->paths[i], why);
        finish_path(run, i);
    }
}

/* Prepare URL and timeout of every path; invalid paths finish at once. */
static void prepare_paths(struct many_run *run)
{
    for (size_t i = 0; i < run->n; i++) {
        struct many_state *state = &run->states[i];
        const char *path = run->paths[i];

        state->started_s = monotonic_s();
        if (check_request("GET", path, &run->resps[i]) != 0) {
            finish_path(run, i);
            continue;
        }
        state->url = build_url(run->client, path);
        state->timeout_ms = request_timeout_for(run->client, path);
        if (state->url == NULL) {
            run->resps[i].result = NOMAD_ERR_INTERNAL;
            snprintf(run->resps[i].error, sizeof(run->resps[i].error),
                     "GET %.*s: out of memory building the URL", endpoint_len(path), path);
            finish_path(run, i);
        }
    }
}

/*
 * How long to block in curl_multi_poll(): 0 when an idle transfer can start a
 * path now, else until the next retry is due, at most one second. libcurl
 * shortens the wait further for its own timers and returns early on socket
 * activity.
 */
static long poll_wait_ms(const struct many_run *run)
{
    const struct nomad_client *client = run->client;
    int idle = 0;
    long retry_ms;

    for (int t = 0; t < client->max_connections; t++)
        idle += client->pool[t].slot == SLOT_IDLE;
    if (idle == 0)
        return 1000;
    if (run->next_fresh < run->n)
        return 0;
    retry_ms = next_retry_in_ms(run, monotonic_s());
    if (retry_ms >= 0 && retry_ms < 1000)
        return retry_ms;
    return 1000;
}

int nomad_get_many(struct nomad_client *client, const char *const *paths, size_t n,
                   struct nomad_response *resps)
{
    struct many_run run = {.client = client, .paths = paths, .resps = resps, .n = n,
                           .remaining = n};
    int failed = 0;

    for (size_t i = 0; i < n; i++)
        nomad_response_init(&resps[i]);
    if (n == 0)
        return 0;

    run.states = calloc(n, sizeof(*run.states));
    if (run.states == NULL || ensure_pool(client) != 0) {
        for (size_t i = 0; i < n; i++) {
            resps[i].result = NOMAD_ERR_INTERNAL;
            snprintf(resps[i].error, sizeof(resps[i].error),
                     "GET %.*s: out of memory preparing concurrent requests",
                     endpoint_len(paths[i]), paths[i]);
        }
        free(run.states);
        return n > INT_MAX ? INT_MAX : (int)n;
    }

    prepare_paths(&run);
    while (run.remaining > 0) {
        int running = 0;
        CURLMcode mc;

        if (start_ready(&run) != 0) {
            abort_run(&run, "could not add a transfer");
            break;
        }
        mc = curl_multi_perform(client->multi, &running);
        if (mc != CURLM_OK) {
            abort_run(&run, curl_multi_strerror(mc));
            break;
        }
        collect_done(&run);
        if (run.remaining == 0)
            break;
        mc = curl_multi_poll(client->multi, NULL, 0, (int)poll_wait_ms(&run), NULL);
        if (mc != CURLM_OK) {
            abort_run(&run, curl_multi_strerror(mc));
            break;
        }
    }

    for (size_t i = 0; i < n; i++) {
        free(run.states[i].url);
        failed += resps[i].result != NOMAD_OK;
    }
    free(run.states);
    return failed;
}
