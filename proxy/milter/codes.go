package milter

// Commands the MTA sends, by their SMFIC_ names in libmilter's mfdef.h.
const (
	cmdAbort        = 'A' // SMFIC_ABORT: forget the current message
	cmdBody         = 'B' // SMFIC_BODY: a chunk of the body
	cmdConnect      = 'C' // SMFIC_CONNECT
	cmdMacro        = 'D' // SMFIC_MACRO: macros for the next command
	cmdEndOfMessage = 'E' // SMFIC_BODYEOB
	cmdHelo         = 'H' // SMFIC_HELO
	cmdQuitNewConn  = 'K' // SMFIC_QUIT_NC: quit, the connection is reused
	cmdHeader       = 'L' // SMFIC_HEADER: one header field
	cmdMail         = 'M' // SMFIC_MAIL
	cmdEndOfHeaders = 'N' // SMFIC_EOH
	cmdOptNeg       = 'O' // SMFIC_OPTNEG: option negotiation
	cmdQuit         = 'Q' // SMFIC_QUIT
	cmdRcpt         = 'R' // SMFIC_RCPT
	cmdData         = 'T' // SMFIC_DATA
	cmdUnknown      = 'U' // SMFIC_UNKNOWN: an SMTP command the MTA does not know
)

// Replies to the MTA, by their SMFIR_ names.
const (
	replyAccept       = 'a' // SMFIR_ACCEPT: accept, no more calls for this message
	replyContinue     = 'c' // SMFIR_CONTINUE
	replyDiscard      = 'd' // SMFIR_DISCARD
	replyAddHeader    = 'h' // SMFIR_ADDHEADER
	replyInsertHeader = 'i' // SMFIR_INSHEADER: add at an index
	replyChangeHeader = 'm' // SMFIR_CHGHEADER: change or, empty, delete
	replyOptNeg       = 'O' // SMFIR_OPTNEG
	replyQuarantine   = 'q' // SMFIR_QUARANTINE
	replyCode         = 'y' // SMFIR_REPLYCODE: reject or tempfail with this text
)
