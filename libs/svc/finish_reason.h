/*
 * finish_reason.h - the one spelling of a FinishReason (proto/llmserve/v1/common.proto)
 * in metric labels (metric_names.h's finish_reason) and span attributes
 * (gen_ai.response.finish_reasons): "stop" (STOP, and EOS: the answer ended by itself),
 * "length", "cancelled", "deadline", and "error" for anything else.
 */
#ifndef SVC_FINISH_REASON_H
#define SVC_FINISH_REASON_H

#include "llmserve/v1/common.pb-c.h"

/* Static text. */
const char *svc_finish_reason_name(Llmserve__V1__FinishReason reason);

#endif
