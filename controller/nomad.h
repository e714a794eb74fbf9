/*
 * Nomad HTTP API client (libcurl).
 *
 * Connection settings follow the official `nomad` CLI: NOMAD_ADDR, NOMAD_TOKEN,
 * NOMAD_REGION, NOMAD_NAMESPACE, NOMAD_CACERT, NOMAD_CAPATH, NOMAD_CLIENT_CERT,
 * NOMAD_CLIENT_KEY, NOMAD_TLS_SERVER_NAME, NOMAD_SKIP_VERIFY, NOMAD_HTTP_AUTH.
 * A configuration file may override each of them (policy.h).
 *
 * Reads (GET) are retried a bounded number of times with jittered exponential
 * backoff on transport errors, 5xx (except a definite answer such as 404) and
 * 429; writes are sent exactly once. Every response is capped at
 * max_response_bytes. The ACL token is sent as X-Nomad-Token and never appears
 * in a log line, an error message or the journal.
 */
#ifndef NOMAD_MEDIC_NOMAD_H
#define NOMAD_MEDIC_NOMAD_H

#include <stddef.h>
#include <stdint.h>

/* Connection settings. Strings are owned (malloc'd) by the struct; NULL means unset. */
struct nomad_conn_config {
    char *address;          /* default "http://127.0.0.1:4646"; "unix:///path" is accepted */
    char *token;            /* secret: never logged */
    char *region;           /* sent as ?region= when set */
    char *namespace_name;   /* default namespace for single-namespace reads; rules use explicit ones */
    char *ca_cert;
    char *ca_path;
    char *client_cert;
    char *client_key;       /* path only; the key's contents are never read by us */
    char *tls_server_name;
    int skip_verify;        /* 0 unless the operator turned verification off */
    char *http_auth;        /* "user" or "user:password", HTTP Basic; secret */
    long connect_timeout_ms;   /* default 5000 */
    long request_timeout_ms;   /* default 30000; a blocking query adds its wait on top */
    int max_retries;           /* reads only; default 3 */
    long retry_base_ms;        /* first backoff; default 200, doubled per retry, +-50% jitter */
    size_t max_response_bytes; /* default 64 MiB */
    int max_connections;       /* parallel reads in nomad_get_many(); default 8 */
};

/* Fill every field with its default. Owned strings are allocated. */
void nomad_conn_config_defaults(struct nomad_conn_config *cfg);

/*
 * Overlay the NOMAD_* environment variables on cfg, the way the official CLI
 * reads them. An invalid NOMAD_SKIP_VERIFY is ignored, as the CLI does.
 * Returns 0, or -1 on allocation failure.
 */
int nomad_conn_config_from_env(struct nomad_conn_config *cfg);

void nomad_conn_config_free(struct nomad_conn_config *cfg);

/* What went wrong with one request. NOMAD_OK covers any 2xx status. */
enum nomad_result {
    NOMAD_OK = 0,
    NOMAD_ERR_TRANSPORT,    /* could not connect, connection dropped, TLS failure */
    NOMAD_ERR_TIMEOUT,
    NOMAD_ERR_STATUS,       /* a non-2xx status; body holds Nomad's plain-text error */
    NOMAD_ERR_TOO_LARGE,    /* body exceeded max_response_bytes */
    NOMAD_ERR_NO_LEADER,    /* X-Nomad-KnownLeader: false, or "No cluster leader" */
    NOMAD_ERR_INTERNAL,     /* allocation failure or a libcurl setup error */
};

/*
 * One response. body is NUL-terminated (body_len excludes the NUL) and owned
 * by the struct; nomad_response_free() releases it. After a failure, error
 * names the method, the endpoint (path without query), the status and Nomad's
 * error text, for example:
 *   GET /v1/allocations: status 500: No cluster leader
 */
struct nomad_response {
    enum nomad_result result;
    long status;             /* HTTP status, 0 when no response arrived */
    char *body;
    size_t body_len;
    uint64_t index;          /* X-Nomad-Index, 0 when absent */
    int known_leader;        /* X-Nomad-KnownLeader: 1 true, 0 false, -1 absent */
    long last_contact_ms;    /* X-Nomad-LastContact, -1 when absent */
    char *next_token;        /* X-Nomad-NextToken, NULL when absent (last page) */
    int attempts;            /* requests sent, retries included */
    double elapsed_s;        /* over all attempts */
    char error[512];
};

void nomad_response_init(struct nomad_response *resp);
void nomad_response_free(struct nomad_response *resp);

struct nomad_client;

/*
 * Create a client. Copies what it needs from cfg, which the caller keeps.
 * Returns NULL with err filled when the settings are invalid (for example an
 * address that is not http://, https:// or unix://).
 */
struct nomad_client *nomad_client_new(const struct nomad_conn_config *cfg, char *err, size_t errsz);
void nomad_client_free(struct nomad_client *client);

/* The base address, for messages (never contains credentials). */
const char *nomad_client_address(const struct nomad_client *client);

/*
 * Send one request. path starts with "/v1/" and may carry a query string;
 * the client appends region= when configured. body may be NULL. A GET is
 * retried as described above; PUT, POST and DELETE are sent once.
 * Returns 0 when resp->result is NOMAD_OK, else -1. resp is always filled and
 * must be freed with nomad_response_free().
 */
int nomad_request(struct nomad_client *client, const char *method, const char *path,
                  const char *body, struct nomad_response *resp);

int nomad_get(struct nomad_client *client, const char *path, struct nomad_response *resp);

/*
 * GET n paths concurrently over at most max_connections reused connections
 * (libcurl multi). resps[i] receives the response for paths[i], retried like
 * nomad_get(). Returns the number of responses whose result is not NOMAD_OK.
 */
int nomad_get_many(struct nomad_client *client, const char *const *paths, size_t n,
                   struct nomad_response *resps);

/*
 * Percent-encode text for use as one path segment or query value (RFC 3986
 * unreserved characters pass through). Returns a malloc'd string or NULL.
 */
char *nomad_escape(const char *text);

/* One-line text for a result code, e.g. "timeout". */
const char *nomad_result_name(enum nomad_result result);

#endif
