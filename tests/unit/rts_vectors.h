/* RTS PDUs exactly as Impacket's rpch module (code we did not write) sends
 * them, with the cookies 00..0f (virtual connection), 10..1f (channel) and
 * 20..2f (association group): the reference bytes of test_rts, test_rpch_vc
 * and test_rpch.  Hex, for t_unhex (testlib.h). */
#ifndef MP_TEST_RTS_VECTORS_H
#define MP_TEST_RTS_VECTORS_H
static const char *const IMPACKET_A1 =
    "05001403100000004c0000000000000000000400060000000100000003000000000102030405060708090a0b0c0d"
    "0e0f03000000101112131415161718191a1b1c1d1e1f0000000000000100";
static const char *const IMPACKET_B1 =
    "0500140310000000680000000000000000000600060000000100000003000000000102030405060708090a0b0c0d"
    "0e0f03000000101112131415161718191a1b1c1d1e1f040000000000004005000000e09304000c00000020212223"
    "2425262728292a2b2c2d2e2f";
/* IN channel recycling (2.2.4.10, 2.2.4.13, 2.2.4.14) built with Impacket's
 * RTSHeader and command structures (its client does not recycle, but its
 * command layouts are its own): IN_R1/A1 naming the predecessor 10..1f and
 * the successor 30..3f; IN_R1/A4 with window 0x2000, timeout 120000;
 * IN_R1/A5 naming the successor. */
static const char *const IMPACKET_IN_R1_A1 =
    "0500140310000000580000000000000004000400060000000100000003000000000102030405060708090a0b0c0d"
    "0e0f03000000101112131415161718191a1b1c1d1e1f03000000303132333435363738393a3b3c3d3e3f";
static const char *const IMPACKET_IN_R1_A4 =
    "05001403100000003400000000000000000004000d0000000000000006000000010000000000000000200000020000"
    "00c0d40100";
static const char *const IMPACKET_IN_R1_A5 =
    "050014031000000028000000000000000000010003000000303132333435363738393a3b3c3d3e3f";
#endif
