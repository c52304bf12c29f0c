/*
 * status_page.h - status.html, embedded at build time (embed.cmake turns the file into
 * status_html.c), served at / by the collector.
 */
#ifndef METRICS_STATUS_PAGE_H
#define METRICS_STATUS_PAGE_H

#include <stddef.h>

/* The page's bytes (NUL-terminated, the NUL not counted in the length). */
extern const char metrics_status_html[];
extern const size_t metrics_status_html_len;

#endif
