/* Output for operators: plan tables, journal rows, JSON. Everything goes to the given stream. */
#ifndef NOMAD_MEDIC_REPORT_H
#define NOMAD_MEDIC_REPORT_H

#include <stdio.h>

#include "../store/journal.h"
#include "reconcile.h"

/* Print a pass as a table. title is "Plan" or "Pass". */
void report_pass_text(FILE *out, const struct pass_result *r, const struct policy *p, const char *title);

/* Print a pass as one JSON object with an "actions" array. Returns 0, or -1 on allocation failure. */
int report_pass_json(FILE *out, const struct pass_result *r, const struct policy *p);

void report_rows_text(FILE *out, const struct journal_action *rows, size_t n);
int report_rows_json(FILE *out, const struct journal_action *rows, size_t n);
/* One journal row with its recorded steps (steps may be NULL when n_steps is 0). */
void report_row_detail_text(FILE *out, const struct journal_action *row, const struct journal_step *steps,
                            size_t n_steps);
int report_row_detail_json(FILE *out, const struct journal_action *row, const struct journal_step *steps,
                           size_t n_steps);

/*
 * The JSON of report_rows_json() and report_row_detail_json() as cJSON
 * trees (the approval API sends them). The caller frees the result with
 * cJSON_Delete(); NULL when memory runs out.
 */
struct cJSON *report_rows_to_json(const struct journal_action *rows, size_t n);
struct cJSON *report_row_detail_to_json(const struct journal_action *row, const struct journal_step *steps,
                                        size_t n_steps);

#endif
