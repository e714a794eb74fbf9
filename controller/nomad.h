/*
 * Nomad HTTP API client (libcurl).
 *
 * Connection settings follow the official `nomad` CLI: NOMAD_ADDR, NOMAD_TOKEN,
 * NOMAD_REGION, NOMAD_NAMESPACE, NOMAD_CACERT, NOMAD_CAPATH, NOMAD_CLIENT_CERT,
 * NOMAD_CLIENT_KEY, NOMAD_TLS_SERVER_NAME, NOMAD_SKIP_VERIFY, NOMAD_HTTP_AUTH.
 * A configuration file may override each of them (policy.h).
 *
 * Reads (GET) are retried a bounded number of times with jittered exponential
 * backoff on transport errors, timeouts, 429 and 5xx. A 5xx whose body
 * contains "not found" (Nomad returns "job not found" with status 500) and
 * every other 4xx are definite answers and are not retried. Writes are sent exactly once.
 * Every decoded response body is capped at max_response_bytes. The ACL token
 * is sent as X-Nomad-Token and never appears in a log line, an error message
 * or the journal.
 *
 * Requests use HTTP/1.1, follow no redirects and identify as "nomad-medic/<version>". libcurl honours the
 * http_proxy, https_proxy and no_proxy environment variables; unlike the Go
 * client it also proxies loopback addresses unless no_proxy lists them.
 */
#ifndef NOMAD_MEDIC_NOMAD_H
#define NOMAD_MEDIC_NOMAD_H

#include <stddef.h>
#include <stdint.h>

/*
 * Whether responses are requested compressed (Accept-Encoding with every
 * encoding libcurl supports). AUTO requests compression unless the address
 * is a loopback address, "localhost" or a unix socket, because with no
 * network between the two ends compression only costs CPU time on both.
 */
enum nomad_compression {
    NOMAD_COMPRESSION_AUTO = 0,
    NOMAD_COMPRESSION_ON,
    NOMAD_COMPRESSION_OFF,
};

/* Connection settings. Strings are owned (malloc'd) by the struct; NULL means unset. */
struct nomad_conn_config {
    char *address;          /* default "http://127.0.0.1:4646"; "unix:///path" is accepted */
    char *token;            /* secret: never logged */
    char *region;           /* sent as ?region= when set */
    char *namespace_name;   /* default namespace for single-namespace reads; callers add
                               ?namespace= themselves, the client never does */
    char *ca_cert;
    char *ca_path;
    char *client_cert;
    char *client_key;       /* path only; the key's contents are never read by us */
    char *tls_server_name;  /* https only: name for SNI and certificate checks */
    int skip_verify;        /* 0 unless the operator turned verification off */
    char *http_auth;        /* "user" or "user:password", HTTP Basic; secret */
    long connect_timeout_ms;   /* default 5000 */
    long request_timeout_ms;   /* default 30000; a blocking query adds its wait on top */
    int max_retries;           /* reads only; default 3 */
    long retry_base_ms;        /* first backoff; default 200, doubled per retry, +-50% jitter */
    size_t max_response_bytes; /* default 64 MiB */
    int max_connections;       /* parallel reads in nomad_get_many(); default 8 */
    enum nomad_compression compression;  /* default AUTO */
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

/* Outcome of one request. NOMAD_OK covers any 2xx status. */
enum nomad_result {
    NOMAD_OK = 0,
    NOMAD_ERR_TRANSPORT,    /* could not connect, connection dropped, TLS failure */
    NOMAD_ERR_TIMEOUT,
    NOMAD_ERR_STATUS,       /* a non-2xx status; body contains Nomad's plain-text error */
    NOMAD_ERR_TOO_LARGE,    /* body exceeded max_response_bytes */
    NOMAD_ERR_NO_LEADER,    /* X-Nomad-KnownLeader: false, or "No cluster leader" */
    NOMAD_ERR_INTERNAL,     /* allocation failure or a libcurl setup error */
};

/*
 * One response. body is NUL-terminated (body_len excludes the NUL) and owned
 * by the struct; nomad_response_free() releases it. body is non-NULL whenever
 * a complete response arrived (an empty 200 gives ""), and NULL after a
 * transport error, a timeout or NOMAD_ERR_TOO_LARGE. With NOMAD_ERR_NO_LEADER
 * from X-Nomad-KnownLeader: false, body contains the possibly stale data.
 * After a failure, error names the method, the endpoint (path without
 * query), the status and the start of Nomad's error text, for example:
 *   GET /v1/allocations: status 500: No cluster leader
 * or for transport errors libcurl's message and the client's address.
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
 * Returns NULL with err filled when a setting is invalid: an address that is
 * not http://, https:// or unix://path, or that has a path or query. A token
 * with a control character, an unreadable CA or client certificate file, and
 * a non-positive timeout, size or connection count are rejected too.
 * Userinfo in the address (http://user:pass@host) becomes HTTP Basic
 * credentials unless http_auth is set.
 *
 * Safe to call from several threads: libcurl's global initialisation runs
 * once under pthread_once(). One client must not be used by two threads at
 * the same time.
 */
struct nomad_client *nomad_client_new(const struct nomad_conn_config *cfg, char *err, size_t errsz);
void nomad_client_free(struct nomad_client *client);

/* The base address, for messages: scheme://host[:port] or unix://path, without credentials. */
const char *nomad_client_address(const struct nomad_client *client);

/* Return 1 when the client requests compressed responses (see enum nomad_compression), else 0. */
int nomad_client_compresses(const struct nomad_client *client);

/*
 * Send one request. method is GET, PUT, POST or DELETE. path starts with
 * "/v1/" and may carry a query string whose values the caller escaped
 * (nomad_escape()); the client appends region= when configured and the path
 * names no region. body is JSON or NULL. A GET is retried as described above;
 * PUT, POST and DELETE are sent once.
 *
 * The timeout is request_timeout_ms. A query with wait=<Go duration>, or a
 * blocking query (index > 0) that the server holds for its 300 s default,
 * gets wait * 17/16 + request_timeout_ms, because Nomad adds up to wait/16
 * of jitter.
 *
 * Returns 0 when resp->result is NOMAD_OK, else -1. resp is overwritten
 * without being freed, is always filled, and must be freed with
 * nomad_response_free().
 */
int nomad_request(struct nomad_client *client, const char *method, const char *path,
                  const char *body, struct nomad_response *resp);

int nomad_get(struct nomad_client *client, const char *path, struct nomad_response *resp);

/*
 * GET n paths concurrently over at most max_connections reused connections
 * (libcurl multi). resps[i] receives the response for paths[i], with the
 * same cap, timeouts, classification and retries as nomad_get(). A failed
 * path waits out its backoff while the others proceed. The connections stay
 * open in the client for the next call. Returns the number of responses
 * whose result is not NOMAD_OK; every resps[i] must be freed.
 */
int nomad_get_many(struct nomad_client *client, const char *const *paths, size_t n,
                   struct nomad_response *resps);

/*
 * A request observer, for metrics. It is called once per attempt that was
 * sent, so a GET retried twice calls it three times. The call comes after
 * the attempt's outcome is known and before any backoff sleep, from the
 * thread that made the request, in nomad_request(), nomad_get() and
 * nomad_get_many() alike.
 * method is "GET", "PUT", "POST" or "DELETE"; path is the caller's path,
 * query string included (the region= the client appends is not); status
 * is the HTTP status, 0 when no response arrived; result classifies the
 * attempt as resp->result does; seconds is the attempt's duration
 * (monotonic clock). It must not call back into the client.
 */
typedef void (*nomad_observer_fn)(void *ctx, const char *method, const char *path, long status,
                                  enum nomad_result result, double seconds);

/* Install observer (NULL removes it) with ctx passed to every call. Not thread-safe: set it before requests start. */
void nomad_client_set_observer(struct nomad_client *client, nomad_observer_fn observer, void *ctx);

/*
 * Percent-encode text for use as one path segment or query value (RFC 3986
 * unreserved characters pass through). Returns a malloc'd string or NULL.
 */
char *nomad_escape(const char *text);

/* One-line text for a result code, e.g. "timeout". */
const char *nomad_result_name(enum nomad_result result);

#endif
