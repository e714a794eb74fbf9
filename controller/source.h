/*
 * Where a pass reads cluster state from: the live API, a capture directory
 * written by `nomad-medic capture`, or a `nomad operator debug` bundle.
 *
 * Every source answers GET requests by API path (with query string) and fills
 * a struct nomad_response exactly as the live client would, so observation
 * code does not know which source it reads. A source that cannot answer a
 * path reports a failed read (result NOMAD_ERR_STATUS or NOMAD_ERR_TRANSPORT
 * with an error text), never an empty list.
 */
#ifndef NOMAD_MEDIC_SOURCE_H
#define NOMAD_MEDIC_SOURCE_H

#include <stddef.h>

#include "nomad.h"

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

/* Same contract as nomad_get(): returns 0 on NOMAD_OK, else -1; resp is always filled. */
int source_get(struct source *src, const char *path, struct nomad_response *resp);

/* Same contract as nomad_get_many(): returns the number of failed reads. */
int source_get_many(struct source *src, const char *const *paths, size_t n,
                    struct nomad_response *resps);

void source_destroy(struct source *src);

/* A live source over client, which the caller keeps and frees after the source. */
struct source *source_live_new(struct nomad_client *client, int per_page);

/*
 * A recording source: forwards to inner and writes every response (failed
 * ones included, with status, headers and error text) into dir, plus
 * manifest.json listing path -> file. Creates dir (mode 0700) if missing and
 * fails if it holds a manifest already. Takes ownership of inner.
 * Returns NULL with err filled.
 */
struct source *source_capture_writer_new(struct source *inner, const char *dir,
                                         char *err, size_t errsz);

/*
 * Replay a directory written by the capture writer. A path that was not
 * captured is answered with a failed read naming the path. Returns NULL with
 * err filled when dir has no readable manifest.
 */
struct source *source_capture_reader_new(const char *dir, char *err, size_t errsz);

/*
 * Read a `nomad operator debug` bundle: a directory, or a .tar.gz holding one.
 * Uses cluster/ and the last interval/NNNN/ folder; accepts NDJSON and
 * JSON-array list files; a file holding {"Error": ...} is a failed read. The
 * bundle has no service registrations, so /v1/services is a failed read whose
 * error says so. Returns NULL with err filled when path is not a bundle.
 */
struct source *source_bundle_new(const char *path, char *err, size_t errsz);

/* Tell a capture directory from a debug bundle. Returns 1 for a capture directory (has manifest.json). */
int source_is_capture_dir(const char *path);

#endif
