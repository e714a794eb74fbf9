/*
 * Where a pass reads cluster state from: the live API, a capture directory
 * written by `nomad-medic capture`, or a `nomad operator debug` bundle.
 *
 * Every source answers GET requests by API path (with query string) and fills
 * a struct nomad_response exactly as the live client would, so observation
 * code does not know which source it reads. A source that cannot answer a
 * path reports a failed read (result NOMAD_ERR_STATUS or NOMAD_ERR_TRANSPORT
 * with an error text), never an empty list.
 *
 * Failed reads made up by an offline source (capture, debug bundle) have
 * status 0 and no body: NOMAD_ERR_STATUS when the source has no data for the
 * path, NOMAD_ERR_TRANSPORT when a file of the source could not be read or
 * parsed, NOMAD_ERR_INTERNAL when memory runs out. The one exception mimics
 * Nomad itself: a bundle without a leader returns status 500 "No cluster
 * leader" for GET /v1/status/leader.
 *
 * Files from outside (capture manifests and bodies, bundle files and
 * archives) are untrusted. Each file read is capped at
 * SOURCE_MAX_FILE_BYTES, and names taken from them never leave their
 * directory.
 */
#ifndef NOMAD_MEDIC_SOURCE_H
#define NOMAD_MEDIC_SOURCE_H

#include <stddef.h>

#include "nomad.h"

/* Largest capture body file or bundle file that a source reads: 256 MiB. */
#define SOURCE_MAX_FILE_BYTES ((size_t)256 << 20)
/*
 * Largest total size of the files that one bundle archive keeps extracted at
 * once (cluster/ and the newest interval so far): 2 GiB.
 */
#define SOURCE_MAX_ARCHIVE_BYTES ((unsigned long long)2 << 30)

struct source;

struct source_ops {
    const char *name;   /* "live", "capture" or "debug-bundle", used in logs */
    int (*get)(struct source *src, const char *path, struct nomad_response *resp);
    int (*get_many)(struct source *src, const char *const *paths, size_t n,
                    struct nomad_response *resps);
    void (*destroy)(struct source *src);
};

struct source {
    const struct source_ops *ops;
    /*
     * Page size for list reads, or 0 for "no per_page parameter". A capture
     * reader sets it to the page size recorded at capture time so that the
     * replayed paths match the recorded ones.
     */
    int per_page;
    /* Unix time (s) the state was read: now for live, the capture time otherwise. */
    long long observed_at;
    /* Text shown to the operator about this source's limits, or NULL. */
    const char *note;
};

/*
 * Same contract as nomad_get(): returns 0 on NOMAD_OK, else -1. resp is
 * always filled (the caller need not initialise it) and is freed with
 * nomad_response_free().
 */
int source_get(struct source *src, const char *path, struct nomad_response *resp);

/* Same contract as nomad_get_many(): returns the number of failed reads. */
int source_get_many(struct source *src, const char *const *paths, size_t n,
                    struct nomad_response *resps);

void source_destroy(struct source *src);

/*
 * Create a live source over client, which the caller keeps and frees after
 * the source. per_page (>= 0) is stored in src->per_page; observed_at is the
 * creation time. Returns NULL when client is NULL, per_page is negative or
 * memory runs out.
 */
struct source *source_live_new(struct nomad_client *client, int per_page);

/*
 * Return the Nomad address of a live source (as nomad_client_address(), never
 * with credentials), or NULL when src is not a live source. The string lives
 * as long as src.
 */
const char *source_live_address(const struct source *src);

/*
 * Create a recording source: forwards to inner and writes every response
 * (failed ones included, with status, headers and error text) into dir, plus
 * manifest.json listing path -> file. Creates dir (mode 0700, parents
 * included) if missing, and fails if it already contains manifest.json.
 *
 * Layout: manifest.json is {"format": "nomad-medic-capture", "version": 1,
 * "captured_at", "per_page", "nomad_address", "note", "entries": [...]}, and
 * each entry names its body file (0001.json, 0002.json, ... generated, never
 * taken from the path), which holds the body bytes as received. Body files
 * are written first, then the manifest is replaced (write to
 * manifest.json.tmp, fsync, rename) after each source_get() and after each
 * source_get_many() batch, so an interrupted capture stays readable. The
 * ACL token is never written: the writer never sees it, and nomad_address
 * has any user:password@ part removed.
 *
 * src->per_page, observed_at and note are inner's. A response that could not
 * be recorded is turned into a failed read (NOMAD_ERR_INTERNAL, error naming
 * the file), so a capture never silently misses a read.
 *
 * Takes ownership of inner on success. Returns NULL with err filled on
 * failure, and then inner still belongs to the caller.
 */
struct source *source_capture_writer_new(struct source *inner, const char *dir,
                                         char *err, size_t errsz);

/*
 * Replay a directory written by the capture writer. src->per_page,
 * observed_at and note come from the manifest, so observation code builds the
 * same paths as at capture time. GET path returns the first entry recorded
 * for exactly that path string (query included), rebuilt with its result,
 * status, body, headers and error. A path that was not captured returns
 * NOMAD_ERR_STATUS, status 0 and the error "capture DIR has no response for
 * GET PATH; capture again with this version of nomad-medic".
 *
 * Returns NULL with err filled when dir has no readable manifest, when the
 * manifest has another format or version, or when a body file it lists is
 * missing or has the wrong size.
 */
struct source *source_capture_reader_new(const char *dir, char *err, size_t errsz);

/*
 * Open a `nomad operator debug` bundle: the nomad-debug-<time> directory, or
 * a tar archive (gzip or other compression) containing that one folder.
 *
 * An archive is extracted into a private directory made with mkdtemp() under
 * $TMPDIR (default /tmp) and removed by source_destroy(). Only the cluster/
 * files and the newest interval/NNNN/ files are extracted. The whole archive
 * is rejected when any entry has an absolute path, a ".." part or control
 * characters in its name. It is also rejected when an entry is not a regular
 * file or directory (symlinks and hard links included) or lies outside the
 * one top folder. Size caps: SOURCE_MAX_FILE_BYTES per extracted file and
 * SOURCE_MAX_ARCHIVE_BYTES for the files kept at once.
 *
 * Reads use cluster/ and the last interval/NNNN/ folder:
 *   /v1/status/leader                   cluster/leader.json (a JSON string;
 *                                       "" returns status 500 "No cluster
 *                                       leader", NOMAD_ERR_NO_LEADER)
 *   /v1/nodes                           interval nodes.json, or cluster/nodes.json
 *                                       when the interval has none
 *   /v1/allocations, /v1/evaluations,   interval allocations.json,
 *   /v1/jobs                            evaluations.json, jobs.json
 *   /v1/node/<id>, /v1/allocation/<id>  that object from the node or allocation
 *                                       list (list stubs: a node lacks
 *                                       StatusUpdatedAt); an ID not in the
 *                                       list is a failed read, not a 404,
 *                                       because a bundle cannot prove absence
 *   /v1/agent/members, /v1/agent/self   cluster/members.json, agent-self.json
 *   /v1/operator/raft/configuration,    interval operator-raft.json,
 *   /v1/operator/autopilot/health,      operator-autopilot-health.json,
 *   /v1/operator/scheduler/configuration operator-scheduler.json
 * List files may be NDJSON (one object a line, Nomad 1.4 and later) or one
 * JSON array; lists are returned as one JSON array with the original bytes of
 * each object. Successful reads have status 200, index 0, no next token, and
 * known_leader 1 (0 when leader.json is "", -1 when it is unreadable).
 *
 * Query strings are ignored except filter= and prefix=, which the bundle
 * cannot apply, so such a read fails. A file containing {"Error": ...} (a failed
 * collection) is a failed read with that text. /v1/services and
 * /v1/service/... are failed reads, because bundles contain no native service
 * registrations; so is every path not listed above.
 *
 * src->per_page is 0. observed_at comes from the folder name
 * (nomad-debug-2006-01-02-150405Z, UTC), else from the newest file mtime.
 * src->note names the limits and the interval used.
 *
 * Returns NULL with err filled when path is not a readable bundle.
 */
struct source *source_bundle_new(const char *path, char *err, size_t errsz);

/*
 * Tell a capture directory from a debug bundle. Returns 1 when path is a
 * directory containing manifest.json, else 0.
 */
int source_is_capture_dir(const char *path);

/*
 * For source implementations: make resp, which must already be initialised,
 * a failed read with result, status, no body and the formatted error text.
 */
void source_response_fail(struct nomad_response *resp, enum nomad_result result, long status,
                          const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/*
 * For source implementations: read the regular file at path into *buf
 * (malloc'd, NUL-terminated, *len excludes the NUL). A symlink as the last
 * path component is rejected. Returns 0, or -1 with *buf NULL and err filled
 * with a message that names the file as display (path when display is NULL),
 * for example "cannot open NAME: reason" or "NAME is larger than N bytes
 * (M MiB), the limit for one file".
 */
int source_read_file(const char *path, const char *display, size_t max_bytes, char **buf,
                     size_t *len, char *err, size_t errsz);

#endif
