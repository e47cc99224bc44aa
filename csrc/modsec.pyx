# cython: language_level=3
"""libmodsecurity (ModSecurity v3) bound for the WAF filter: a rule set, and one transaction
per request that sees the connection, the request line, the headers and the body.

Only what a request-side WAF calls is declared (no response phases). The engine's log
callback receives each matched rule's message with the transaction's own list as its
data pointer, so the filter reports every rule id that matched, in block and detect mode.
Pure twin (the same library through ctypes): fastgw/waf/engine_ctypes.py.
"""

from libc.stdlib cimport free
from cpython.ref cimport PyObject


cdef extern from "modsecurity/modsecurity.h":
    ctypedef struct ModSecurity:
        pass
    ctypedef void (*ModSecLogCb)(void*, const void*)
    ModSecurity* msc_init()
    void msc_set_connector_info(ModSecurity* msc, const char* connector)
    void msc_set_log_cb(ModSecurity* msc, ModSecLogCb cb)


cdef extern from "modsecurity/rules_set.h":
    ctypedef struct RulesSet:
        pass
    RulesSet* msc_create_rules_set()
    int msc_rules_add(RulesSet* rules, const char* plain_rules, const char** error)
    int msc_rules_cleanup(RulesSet* rules)


cdef extern from "modsecurity/intervention.h":
    ctypedef struct ModSecurityIntervention:
        int status
        int pause
        char* url
        char* log
        int disruptive


cdef extern from "modsecurity/transaction.h":
    ctypedef struct Transaction:
        pass
    Transaction* msc_new_transaction(ModSecurity* ms, RulesSet* rules, void* logCbData)
    int msc_process_connection(Transaction* t, const char* client, int cPort, const char* server, int sPort)
    int msc_process_uri(Transaction* t, const char* uri, const char* protocol, const char* http_version)
    int msc_add_n_request_header(Transaction* t, const unsigned char* key, size_t len_key,
                                 const unsigned char* value, size_t len_value)
    int msc_process_request_headers(Transaction* t)
    int msc_append_request_body(Transaction* t, const unsigned char* body, size_t size)
    int msc_process_request_body(Transaction* t)
    int msc_intervention(Transaction* t, ModSecurityIntervention* it)
    int msc_process_logging(Transaction* t)
    void msc_transaction_cleanup(Transaction* t)


cdef void _on_log(void* data, const void* message) noexcept with gil:
    if data != NULL and message != NULL:
        (<list>(<PyObject*>data)).append((<const char*>message).decode("utf-8", "replace"))


cdef ModSecurity* _engine = NULL


cdef ModSecurity* _the_engine():
    global _engine
    if _engine == NULL:
        _engine = msc_init()
        msc_set_connector_info(_engine, b"fastgw")
        msc_set_log_cb(_engine, _on_log)
    return _engine


cdef class WafRules:
    """A compiled rule set (SecLang text with its Includes); raises ValueError on a bad rule."""

    cdef RulesSet* rules

    def __cinit__(self, str text):
        cdef const char* error = NULL
        _the_engine()
        self.rules = msc_create_rules_set()
        data = text.encode()
        if msc_rules_add(self.rules, data, &error) < 0:
            message = error.decode("utf-8", "replace") if error != NULL else "the rules do not load"
            free(<void*>error)
            raise ValueError(message.strip())

    def __dealloc__(self):
        if self.rules != NULL:
            msc_rules_cleanup(self.rules)

    def transaction(self):
        return Transaction_(self)


cdef class Transaction_:
    """One request through the rules. Each ``process_*`` returns the intervention status (403...)
    or 0; ``matches`` lists the engine's messages for the rules that matched."""

    cdef Transaction* t
    cdef WafRules rules  # the rule set outlives its transactions
    cdef public list matches

    def __cinit__(self, WafRules rules):
        self.rules = rules
        self.matches = []
        self.t = msc_new_transaction(_the_engine(), rules.rules, <void*>self.matches)

    def __dealloc__(self):
        if self.t != NULL:
            msc_transaction_cleanup(self.t)

    cdef int _intervention(self):
        cdef ModSecurityIntervention it
        it.status = 200
        it.pause = 0
        it.url = NULL
        it.log = NULL
        it.disruptive = 0
        msc_intervention(self.t, &it)
        if it.url != NULL:
            free(it.url)
        if it.log != NULL:  # the disruptive rule's message (the others came by the log callback)
            self.matches.append((<bytes>it.log).decode("utf-8", "replace"))
            free(it.log)
        return it.status if it.disruptive else 0

    def process_connection(self, bytes client, int client_port, bytes server, int server_port):
        msc_process_connection(self.t, client, client_port, server, server_port)
        return self._intervention()

    def process_uri(self, bytes uri, bytes method, bytes version):
        msc_process_uri(self.t, uri, method, version)
        return self._intervention()

    def process_request_headers(self, list headers):
        cdef bytes name, value
        for name, value in headers:
            msc_add_n_request_header(self.t, name, len(name), value, len(value))
        msc_process_request_headers(self.t)
        return self._intervention()

    def process_request_body(self, const unsigned char[:] body):
        if body.shape[0]:
            msc_append_request_body(self.t, &body[0], body.shape[0])
        msc_process_request_body(self.t)
        return self._intervention()

    def finish(self):
        msc_process_logging(self.t)
