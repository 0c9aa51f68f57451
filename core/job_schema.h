/* job_schema.h — convert a merged job tree into the job struct (types and names only;
 * job_validate checks ranges). J must hold job_defaults() and its path. */
#ifndef FQ_JOB_SCHEMA_H
#define FQ_JOB_SCHEMA_H

#include "job.h"
#include "yaml_tree.h"

int job_from_tree(const yt_node *root, job *j);

#endif
