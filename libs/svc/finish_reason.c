/*
 * finish_reason.c - see finish_reason.h.
 */
#include "svc/finish_reason.h"

const char *svc_finish_reason_name(Llmserve__V1__FinishReason reason)
{
    switch (reason) {
    case LLMSERVE__V1__FINISH_REASON__FINISH_REASON_STOP:
    case LLMSERVE__V1__FINISH_REASON__FINISH_REASON_EOS:
        return "stop";
    case LLMSERVE__V1__FINISH_REASON__FINISH_REASON_LENGTH:
        return "length";
    case LLMSERVE__V1__FINISH_REASON__FINISH_REASON_CANCELLED:
        return "cancelled";
    case LLMSERVE__V1__FINISH_REASON__FINISH_REASON_DEADLINE:
        return "deadline";
    default:
        return "error";
    }
}
