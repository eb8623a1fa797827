/* The guard's constant tables: built-in functions and operators safe on
 * unprotected data, relations that are never readable, pre-scan keywords.
 * Pure: constant sorted tables and lookups only; no I/O, no state. */
#include <stdlib.h>
#include <string.h>

#include "sql_guard_internal.h"

/* Generated sorted (byte order); g_funcs_sorted() checks it in the tests.
 * SAFE_FUNCS: scalar/aggregate/window built-ins that only compute on their
 * arguments. Anything that runs SQL given as text, reads files, large
 * objects or other databases is absent (and listed in READS_SQL so the
 * message can say so). */
static const char *const SAFE_FUNCS[] = {
    "abbrev", "abs", "acldefault", "aclexplode", "acos", "age", "array_agg",
    "array_append", "array_cat", "array_dims", "array_fill", "array_length",
    "array_lower", "array_ndims", "array_position", "array_positions",
    "array_prepend", "array_remove", "array_replace", "array_to_json",
    "array_to_string", "array_upper", "ascii", "asin", "atan", "atan2", "avg",
    "bit_and", "bit_count", "bit_length", "bit_or", "bit_xor", "bool",
    "bool_and", "bool_or", "bpchar", "broadcast", "btrim", "bytea",
    "cardinality", "cbrt", "ceil", "ceiling", "char_length",
    "character_length", "chr", "clock_timestamp", "coalesce",
    "col_description", "concat", "concat_ws", "convert", "convert_from",
    "convert_to", "corr", "cos", "count", "covar_pop", "covar_samp",
    "cume_dist", "current_catalog", "current_database", "current_date",
    "current_role", "current_schema", "current_schemas", "current_setting",
    "current_time", "current_timestamp", "current_user", "currval", "date",
    "date_bin", "date_part", "date_trunc", "decode", "degrees", "dense_rank",
    "div", "encode", "every", "exp", "extract", "factorial", "family",
    "first_value", "float4", "float8", "floor", "format", "format_type", "gcd",
    "gen_random_uuid", "generate_series", "generate_subscripts", "get_bit",
    "get_byte", "greatest", "grouping", "has_any_column_privilege",
    "has_column_privilege", "has_database_privilege",
    "has_foreign_data_wrapper_privilege", "has_function_privilege",
    "has_language_privilege", "has_schema_privilege", "has_sequence_privilege",
    "has_server_privilege", "has_table_privilege", "has_tablespace_privilege",
    "has_type_privilege", "host", "hostmask", "inet_client_addr",
    "inet_client_port", "inet_server_addr", "inet_server_port", "initcap",
    "int2", "int4", "int8", "interval", "is_normalized", "isempty", "isfinite",
    "json_agg", "json_array_elements", "json_array_elements_text",
    "json_array_length", "json_build_array", "json_build_object", "json_each",
    "json_each_text", "json_extract_path", "json_extract_path_text",
    "json_object", "json_object_agg", "json_object_keys",
    "json_populate_record", "json_strip_nulls", "json_to_record",
    "json_to_recordset", "json_typeof", "jsonb_agg", "jsonb_array_elements",
    "jsonb_array_elements_text", "jsonb_array_length", "jsonb_build_array",
    "jsonb_build_object", "jsonb_each", "jsonb_each_text",
    "jsonb_extract_path", "jsonb_extract_path_text", "jsonb_insert",
    "jsonb_object", "jsonb_object_agg", "jsonb_object_keys",
    "jsonb_path_exists", "jsonb_path_match", "jsonb_path_query",
    "jsonb_path_query_array", "jsonb_path_query_first",
    "jsonb_populate_record", "jsonb_pretty", "jsonb_set", "jsonb_set_lax",
    "jsonb_strip_nulls", "jsonb_to_record", "jsonb_to_recordset",
    "jsonb_typeof", "justify_days", "justify_hours", "justify_interval", "lag",
    "last_value", "lastval", "lcm", "lead", "least", "left", "length",
    "like_escape", "ln", "localtime", "localtimestamp", "log", "log10",
    "lower", "lower_inc", "lower_inf", "lpad", "ltrim", "make_date",
    "make_interval", "make_time", "make_timestamp", "make_timestamptz",
    "masklen", "max", "md5", "min", "min_scale", "mod", "mode", "netmask",
    "network", "nextval", "normalize", "now", "nth_value", "ntile", "nullif",
    "numeric", "obj_description", "octet_length", "overlaps", "overlay",
    "percent_rank", "percentile_cont", "percentile_disc", "pg_advisory_lock",
    "pg_advisory_lock_shared", "pg_advisory_unlock", "pg_advisory_unlock_all",
    "pg_advisory_unlock_shared", "pg_advisory_xact_lock", "pg_backend_pid",
    "pg_char_to_encoding", "pg_collation_for", "pg_collation_is_visible",
    "pg_column_size", "pg_conf_load_time", "pg_conversion_is_visible",
    "pg_current_xact_id", "pg_database_size", "pg_describe_object",
    "pg_encoding_to_char", "pg_export_snapshot", "pg_function_is_visible",
    "pg_get_constraintdef", "pg_get_expr", "pg_get_function_arg_default",
    "pg_get_function_arguments", "pg_get_function_identity_arguments",
    "pg_get_function_result", "pg_get_function_sqlbody", "pg_get_functiondef",
    "pg_get_indexdef", "pg_get_keywords", "pg_get_object_address",
    "pg_get_partition_constraintdef", "pg_get_partkeydef",
    "pg_get_publication_tables", "pg_get_replica_identity_index",
    "pg_get_ruledef", "pg_get_serial_sequence", "pg_get_statisticsobjdef",
    "pg_get_statisticsobjdef_columns", "pg_get_statisticsobjdef_expressions",
    "pg_get_triggerdef", "pg_get_userbyid", "pg_get_viewdef", "pg_has_role",
    "pg_identify_object", "pg_identify_object_as_address",
    "pg_index_column_has_property", "pg_index_has_property",
    "pg_indexam_has_property", "pg_indexes_size", "pg_is_in_recovery",
    "pg_is_other_temp_schema", "pg_jit_available", "pg_my_temp_schema",
    "pg_notify", "pg_opclass_is_visible", "pg_operator_is_visible",
    "pg_opfamily_is_visible", "pg_options_to_table", "pg_partition_ancestors",
    "pg_partition_root", "pg_partition_tree", "pg_postmaster_start_time",
    "pg_relation_filenode", "pg_relation_is_publishable", "pg_relation_size",
    "pg_size_bytes", "pg_size_pretty", "pg_sleep",
    "pg_statistics_obj_is_visible", "pg_table_is_visible", "pg_table_size",
    "pg_tablespace_location", "pg_total_relation_size", "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared", "pg_try_advisory_xact_lock",
    "pg_ts_config_is_visible", "pg_ts_dict_is_visible",
    "pg_ts_parser_is_visible", "pg_ts_template_is_visible",
    "pg_type_is_visible", "pg_typeof", "phraseto_tsquery", "pi",
    "plainto_tsquery", "position", "pow", "power", "quote_ident",
    "quote_literal", "quote_nullable", "radians", "random", "range_merge",
    "rank", "regexp_count", "regexp_instr", "regexp_like", "regexp_match",
    "regexp_matches", "regexp_replace", "regexp_split_to_array",
    "regexp_split_to_table", "regexp_substr", "regr_avgx", "regr_avgy",
    "regr_count", "regr_intercept", "regr_r2", "regr_slope", "regr_sxx",
    "regr_sxy", "regr_syy", "repeat", "replace", "reverse", "right", "round",
    "row_number", "row_to_json", "rpad", "rtrim", "scale", "session_user",
    "set_bit", "set_byte", "setseed", "setval", "sha224", "sha256", "sha384",
    "sha512", "shobj_description", "sign", "similar_to_escape", "sin",
    "split_part", "sqrt", "starts_with", "statement_timestamp", "stddev",
    "stddev_pop", "stddev_samp", "string_agg", "string_to_array",
    "string_to_table", "strpos", "substr", "substring", "sum", "tan", "text",
    "time", "timeofday", "timestamp", "timestamptz", "timezone", "to_ascii",
    "to_char", "to_date", "to_hex", "to_json", "to_jsonb", "to_number",
    "to_regclass", "to_regnamespace", "to_regoper", "to_regproc",
    "to_regprocedure", "to_regrole", "to_regtype", "to_timestamp",
    "to_tsquery", "to_tsvector", "transaction_timestamp", "translate", "trim",
    "trim_array", "trim_scale", "trunc", "ts_headline", "ts_rank",
    "ts_rank_cd", "txid_current", "txid_current_if_assigned", "unistr",
    "unnest", "upper", "upper_inc", "upper_inf", "user", "uuid",
    "uuid_generate_v4", "var_pop", "var_samp", "varchar", "variance",
    "version", "websearch_to_tsquery", "width_bucket", "xmlexists",
    "xpath_exists",
};

static const char *const READS_SQL[] = {
    "cursor_to_xml", "cursor_to_xmlschema", "database_to_xml", "dblink",
    "lo_export", "lo_from_bytea", "lo_get", "lo_import", "lo_open", "lo_put",
    "loread", "pg_ls_dir", "pg_mcv_list_items", "pg_read_binary_file",
    "pg_read_file", "pg_stat_file", "query_to_xml",
    "query_to_xml_and_xmlschema", "query_to_xmlschema", "schema_to_xml",
    "set_config", "table_to_xml", "table_to_xml_and_xmlschema",
    "table_to_xmlschema",
};

static const char *const SAFE_OPS[] = {
    "!!", "!=", "!~", "!~*", "!~~", "!~~*", "#", "##", "#-", "#>", "#>>", "%",
    "&", "&&", "&<", "&>", "*", "+", "-", "->", "->>", "-|-", "/", "<", "<->",
    "<<", "<<=", "<=", "<>", "<@", "=", ">", ">=", ">>", ">>=", "?", "?&",
    "?|", "@", "@>", "@?", "@@", "@@@", "BETWEEN", "BETWEEN_SYMMETRIC",
    "NOT_BETWEEN", "NOT_BETWEEN_SYMMETRIC", "^", "|", "|/", "||", "||/", "~",
    "~*", "~=", "~~", "~~*",
};

static const char *const DENIED_RELS[] = {
    /* pg_statistic_ext (definitions) and pg_largeobject_metadata (owners,
     * ACLs) hold no values and pg_dump reads them: allowed. */
    "pg_cursors", "pg_largeobject", "pg_prepared_statements",
    "pg_stat_activity", "pg_stat_statements", "pg_statistic",
    "pg_statistic_ext_data", "pg_stats", "pg_stats_ext", "pg_stats_ext_exprs",
};

static const char *const PRESCAN_KEYWORDS[] = {
    "alter", "call", "close", "copy", "create", "cursor_to_xml",
    "cursor_to_xmlschema", "database_to_xml", "dblink", "deallocate",
    "declare", "discard", "do", "execute", "explain", "extension", "fetch",
    "function", "import", "language", "lo_export", "lo_from_bytea", "lo_get",
    "lo_import", "lo_open", "lo_put", "load", "loread", "merge", "move",
    "notify", "pg_cursors", "pg_largeobject", "pg_largeobject_metadata",
    "pg_ls_dir", "pg_mcv_list_items", "pg_prepared_statements",
    "pg_read_binary_file", "pg_read_file", "pg_stat_activity", "pg_stat_file",
    "pg_stat_statements", "pg_statistic", "pg_statistic_ext",
    "pg_statistic_ext_data", "pg_stats", "pg_stats_ext", "pg_stats_ext_exprs",
    "pg_temp", "pgveil", "prepare", "procedure", "query_to_xml",
    "query_to_xml_and_xmlschema", "query_to_xmlschema", "reset", "rule",
    "schema_to_xml", "server", "set", "set_config", "show",
    "standard_conforming_strings", "table_to_xml",
    "table_to_xml_and_xmlschema", "table_to_xmlschema", "trigger",
};

static const char *const PAREN_KEYWORDS[] = {
    "all", "and", "any", "array", "as", "asc", "between", "bit", "by", "case",
    "cast", "char", "character", "coalesce", "collation", "conflict",
    "current", "decimal", "desc", "distinct", "double", "else", "except",
    "exists", "extract", "filter", "first", "float", "following", "for",
    "from", "greatest", "group", "groups", "having", "ilike", "in",
    "intersect", "interval", "is", "join", "key", "last", "lateral", "least",
    "like", "limit", "normalize", "not", "nullif", "nulls", "numeric", "of",
    "offset", "on", "only", "or", "order", "over", "overlay", "partition",
    "position", "preceding", "precision", "range", "row", "rows", "select",
    "similar", "some", "substring", "then", "time", "timestamp", "to", "trim",
    "unbounded", "union", "using", "values", "varchar", "when", "where",
    "with", "within", "xmlattributes", "xmlconcat", "xmlelement", "xmlexists",
    "xmlforest", "xmlparse", "xmlpi", "xmlroot", "xmlserialize",
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static int cmp_str(const void *k, const void *e) {
  return strcmp((const char *)k, *(const char *const *)e);
}

static bool in_list(const char *const *list, size_t n, const char *s) {
  return s && bsearch(s, list, n, sizeof(list[0]), cmp_str) != NULL;
}

/* Bounded lookup for a non-NUL-terminated lower-case word. */
static bool in_list_n(const char *const *list, size_t n, const char *w,
                      size_t len) {
  char buf[64];
  if (len == 0 || len >= sizeof buf)
    return false;
  memcpy(buf, w, len);
  buf[len] = '\0';
  return in_list(list, n, buf);
}

bool g_func_safe_name(const char *name) {
  return in_list(SAFE_FUNCS, NELEM(SAFE_FUNCS), name);
}
bool g_func_reads_sql(const char *name) {
  return in_list(READS_SQL, NELEM(READS_SQL), name);
}
bool g_op_safe(const char *op) { return in_list(SAFE_OPS, NELEM(SAFE_OPS), op); }
bool g_rel_denied(const char *name) {
  return in_list(DENIED_RELS, NELEM(DENIED_RELS), name);
}
bool g_prescan_keyword(const char *lower, size_t len) {
  return in_list_n(PRESCAN_KEYWORDS, NELEM(PRESCAN_KEYWORDS), lower, len);
}
bool g_prescan_paren_ok(const char *lower, size_t len) {
  return in_list_n(PAREN_KEYWORDS, NELEM(PAREN_KEYWORDS), lower, len) ||
         in_list_n(SAFE_FUNCS, NELEM(SAFE_FUNCS), lower, len);
}

static bool sorted(const char *const *l, size_t n) {
  for (size_t i = 1; i < n; i++)
    if (strcmp(l[i - 1], l[i]) >= 0)
      return false;
  return true;
}

/* For the unit tests: every table is sorted (bsearch depends on it). */
bool pv_guard_tables_sorted(void);
bool pv_guard_tables_sorted(void) {
  return sorted(SAFE_FUNCS, NELEM(SAFE_FUNCS)) &&
         sorted(READS_SQL, NELEM(READS_SQL)) &&
         sorted(SAFE_OPS, NELEM(SAFE_OPS)) &&
         sorted(DENIED_RELS, NELEM(DENIED_RELS)) &&
         sorted(PRESCAN_KEYWORDS, NELEM(PRESCAN_KEYWORDS)) &&
         sorted(PAREN_KEYWORDS, NELEM(PAREN_KEYWORDS));
}
