"""AES DUKPT (firmware/dukpt.py) against the ANSI X9.24-3-2017 Supplement Test Vectors.

TEST KEYS: every BDK and key in this file is a published test value or derived from one. None
may ever protect a real transaction.

ASC X9 publishes the supplement freely (https://x9.org/standards/x9-24-part-3-test-vectors/,
"X9.24-3-2017-Test-Vectors-20180129"). The values below were copied from public projects that
reproduce it, named in each comment:
- [OEMV128] openemv/dukpt, test/dukpt_aes128_test.c: "ANSI X9.24-3:2017 Supplement Test Vectors
  for AES-128 BDK" (initial key; counters 1-8 transaction, PIN, MAC generation and data
  encryption keys; transaction keys for 1FFFE-20001 and the last four counters; the eight
  enciphered format 4 PIN blocks of the supplement's "Calculation of AES PIN Block Format 4").
- [OEMV256] openemv/dukpt, test/dukpt_aes256_test.c: the same for the AES-256 BDK, with AES-128
  and AES-256 working keys.
- [PAYSEC] the paysec-dukpt crate's working key tests ("annex_b"): counter 1 keys for every
  usage, PIN/MAC/data keys for 1FFFE, 1FFFF, 20000.
- [CSCRIPT] CryptoScript's DukptAesWorkingKeyTests ("AnnexB"): 2TDEA and 3TDEA PIN keys at
  counter 1; the MAC and data keys of the same suites from a public YAML digest of the
  supplement ("reference_vectors_2TDEA_from_AES128_BDK", "..._3TDEA_...").
"""

from __future__ import annotations

import contextlib

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st
from psec.pinblock import decipher_pinblock_iso_4, encipher_pinblock_iso_4

from firmware.dukpt import (
    COUNTER_LIMIT,
    DukptError,
    DukptExhaustedError,
    KeyType,
    KeyUsage,
    TerminalDukpt,
    derive_initial_key,
    format_ksn,
    host_transaction_key,
    split_ksn,
    transaction_key_from_initial_key,
    working_key,
)

# TEST KEYS. Supplement, "BDK and Associated Data for Test Vectors".
BDK128 = bytes.fromhex("FEDCBA9876543210F1F1F1F1F1F1F1F1")
BDK256 = bytes.fromhex("FEDCBA9876543210F1F1F1F1F1F1F1F1FEDCBA9876543210F1F1F1F1F1F1F1F1")
IKID = bytes.fromhex("1234567890123456")
# [OEMV128] and [OEMV256].
IK128 = bytes.fromhex("1273671EA26AC29AFA4D1084127652A1")
IK256 = bytes.fromhex("CE9CE0C101D1138F97FB6CAD4DF045A7083D4EAE2D35A31789D01CCF0949550F")

# Supplement, "Calculation of AES PIN Block Format 4": PIN 1234, PAN 4111111111111111.
PIN = "1234"
PAN = "4111111111111111"


def ksn(counter: int) -> bytes:
    return IKID + counter.to_bytes(4, "big")


def pin_key(transaction_key: bytes, serial: bytes) -> bytes:
    return working_key(transaction_key, serial, KeyUsage.PIN_ENCRYPTION, KeyType.AES128)


def reachable(counter: int) -> bool:
    # X9.24-3 6.1, written out independently of the module: 1..2^32-1, at most 16 one bits.
    return 0 < counter < 2**32 and bin(counter).count("1") <= 16


# [OEMV128], counters 1 to 8 ("middle of page 2" of the supplement).
AES128_TRANSACTION = [
    "4F21B565BAD9835E112B6465635EAE44", "2F34D68DE10F68D38091A73B9E7C437C",
    "031504E530365CF81264238540518318", "0EEFC7ADA628BA68878DA9165A8A1887",
    "C2A7AC328A5DA2D6002D62465BFC028B", "D30F7D9351DA58448A2F5E92B4EE3B7D",
    "A8253CEED9AC042C54F75D35C8352278", "718EE6CF0B27E53D5F7AF99C4D8146A2",
]
AES128_PIN = [
    "AF8CB133A78F8DC2D1359F18527593FB", "D30BDC73EC9714B000BEC66BDB7B6D09",
    "7D69F01F3B45449F62C7816ECE723268", "91A0588318EC2673214271F70137896E",
    "35A43BC9EFEB09C756204B57E3FB7D4D", "02DCC6CD1201A3A2CA7099559C862123",
    "6ECF912F3B18CA11A7A27BB60705FD09", "4D9DF3FBEE3448FC3E676D04320A90F5",
]
AES128_MAC = [
    "A2DC23DE6FDE0824A2BC321E08E4B8B7", "484C3B06E8562704528CD5B46FB12FB6",
    "A5DF7D9D800CA769766F0C77CA4E6E6C", "E6E4679647D8A9057C1FC15537CB4C4E",
    "0588185FE1FF8C7E22FAD78C1C61F065", "7B60F72A5639C0EE7EB2100FA80BB793",
    "BAA08CA263C69525BC6B1BA8F4275D69", "6FD572E5D59E618875F193484F9178FB",
]
AES128_DATA = [
    "A35C412EFD41FDB98B69797C02DCD08F", "D639514AA33AC43AD9229E433D6D4E5B",
    "EF17F6AB45B4820C93A3DCB21BC491AD", "B3BD44C08BB6BA27C3BB4711D7D70387",
    "CA02DF6F30B39E14BD0B4A30E460920F", "C9B8A7C4E486180B2229115164F0B293",
    "0FA8F1F0A2DD7B1005A862D77CDED698", "650F34204ABD4E57764D61AC3D266FB1",
]
# [OEMV128], supplement page 31: PIN 1234 under the PIN keys above, random fill 2F69ADDE2E9E7ACE.
AES128_PIN_BLOCKS = [
    "A912150391AB65A67E52883D81CE2D15", "52A00503BD34BA1383F6A7EE9FE2547F",
    "A5A27E82B43A9A866A93D7ABE89CEF93", "71B3D0528669498777555A8BE6698E44",
    "881A7F77A2E04E5BEA985E342FD0B628", "BDC1C3871AFB0B340AA5B5CEFD08695E",
    "4A8E6B8C7DBEE6CBA6DC774F0CB83396", "8308BB857C17F390369F761F8EB358FA",
]
# [OEMV128], page 5 (0x1FFFF has 17 one bits: a host-only vector) and page 6 (last four).
AES128_SKIP = {
    0x0001FFFE: "E21E8C8D347F8561A2BE752DAA85A111", 0x0001FFFF: "1FE368988089CDD76DA18A3458E113BA",
    0x00020000: "F7AE9025468A25D37B7249CFFED224C8", 0x00020001: "692C8EA4013645135B36497131DF9D2C",
}
AES128_LAST = {
    0xFFFE2000: "48E585B694EB0B18D5C35443E163C0BA", 0xFFFE4000: "396C2C7CA1EA701C03B86B7D41F0C562",
    0xFFFE8000: "0387625F189B58AE03EF0E8CCA41105E", 0xFFFF0000: "F6BA59389BD14A9855BE9727E7C52E3C",
}

# [OEMV256], counters 1 to 8 (supplement pages 7 and 13).
AES256_TRANSACTION = [
    "54AC2B32B145EA4A554CB8BC44B17467063A799856B1CCC2A138D36E8DBF78B3",
    "5DD5A0253842BBBE1D7C0DA27021412C6F1FAB53FB928DEAE56DA06090A9DE97",
    "8EEEF7C464AE415BB1D73FAED21993CD669F7999092A579EC6DD3CC680C65171",
    "C18CBED570B3B89ECADA7CEC9C224CD5A86ECF3DE377D3EFAB720F8C4D76B9D0",
    "6B3C3C93307151C25DC2309456F01C5C3108DAD571C321899A9B7E0C009FD2EB",
    "B8BB61AE3E2D5CD8C699E0C578FB2C7B89B0C0CF02DBAB60864D8049C986C844",
    "88D0ACA287B3066F5DE0C93396337D4C2DA8D92C1F720A576D62CEB4C979E01E",
    "20A796D5077D51B8E7613893A4F095B134E02917DC84BD391F3661D0873FF308",
]
AES256_PIN_128 = [
    "09C9C432966811D6B2C3336BAC1B1202", "D632226A80795D13A80AFE66A3E97B01",
    "C2CBD3D766B16F9F82F4EE3F74478918", "58A3779C1E24B3EDAF068609E7E56D59",
    "97504C8BB0FD4D4A88D605143BF00025", "BF281141609E6CAE7DF10DFA47A8D03D",
    "B7C6BB187134E9D429C3E8B7CCBD8477", "53C1C60A65532313141A102AD720E967",
]
AES256_MAC_128 = [
    "F04A1FABD4176E15490CEC82E217A96D", "DD99D77B4E2AB538B26BB6A8B3FB0BE3",
    "5A742A4A0403B3D7BB30842DAFBB5972", "C531F7E08514858C445D5F54BFE7DA8E",
    "E2E25AA7FE6E5DD6042C632A5DFED945", "07B215929C5DB4262DECEE4A0336DD4F",
    "3AC9CC5159F96E10FCC5EB64015AC76A", "6E94A9283EA9AEB7EAA77C3FF55FF2D1",
]
AES256_DATA_128 = [
    "616D59AE91F8CC7016F89FDA29605FA4", "07B79D9BFF3633C07A9FDDF132070B30",
    "706E4E629E466BED956548E7B0D90C3D", "CF3A4D9CA7E962E4023A84A2FE47DC80",
    "94C28455AEAD970555F326298557FA81", "408D3B9A7D1AF109E2F689514BF79AC7",
    "DC2915BF421D617E7725E63A7DACB18D", "8950DD50C254C60E26737CA9229F0F18",
]
AES256_PIN_256 = [
    "8C1AB7BEE973829E30242E0BBBDD4946D540C98FC1B5BDCF94790001A23FD502",
    "3583D6CD02FC38822CC71A8D7678E04F4A8556335E6CC66863D3DADC5AEE2C62",
    "96A1AB5D37CB7CF81DDE64F66C46E0389B833E7AD5F4E44C791F04FAFDA6DA0E",
    "420AA584BF215C4777E93009B56D08DE80687021D07ED96349FF71379CE5636D",
    "B1E9E3D918952E6E5F67917F0FE77060F865AE27DCAD5742DDF90F61453B98BA",
    "8714EB94E3BFD3018EC99D0434D9C94F071AF2EEBF4332FB14F5179793AA582C",
    "693C893A1E81D280302E0A47E7E634337B9A9B26E7CC6064D807E08FF911AFAC",
    "173A45284262A3E292D86D08FD6DE9167963214450D1D48F6103BD2EB08E61B5",
]
AES256_MAC_256 = [
    "61DABDF4B340CF461EE860B1D1AB55357142BD2D6977306859CF49AEFE8F1549",
    "4417356219B2F93CE3F2671623DDCAB58A8B85AD80662A8D628024000956D426",
    "35BD00A46F2A2BD127F565FBF2974B735AE3BB70242C0A415857CF69B2C2691A",
    "D80617C3C5869A8DCF0DA5383D032A0D6E6C51C0BF649BE992BE84AA191AE326",
    "8B047E32C476C0A0AF90A9B8D1C247C433E3D4C1DF1C7FC52E8CB1DC4C8FB275",
    "A2FF6FFB37CB8042B8C9B2F94C90C83D94DD5BECCD9951CFAB0BE7BD865CA403",
    "E8A57085DBE804B8C2767F9F77D54854861E99633A062C700B4E50A865153150",
    "949A3FEF12DBD273DD25BB60E29BBE313C872A9DE3BE03A7E29626ACA0A42880",
]
AES256_DATA_256 = [
    "71EB36C9A6B7F801D1D1700C29741FC5A5C4E9B45D742DA7AF6992B8AA29AF58",
    "D0AC9F71F875FFFF3A83778F72F39EBB0924A5A526617AF669665E0A19725465",
    "8E70D5DF53F48ED2F2A0B54FC4F45C844579BE96F6F161222CDD50193E2F737F",
    "41D23F7D78E22A978D726BC71D266374263120EE49146CE5C1291FD0EE7DDD31",
    "813D156C142E5BB8F136427EBD0A1AC4DC9B2B5963C481F5E0A58F4BF33BD185",
    "F1FB0591AA2E45E1CE4C5D970C7396C4A87E53E5900C4A6D95C174140CC0AC9C",
    "69BC5C9AFB2C93CC30C3F7529360B34D7B64B7206E0F0940D8654378C54824F2",
    "0BF8789A21D068410A16C9F7FCBF65A7B4FF73203ADC0F1B4B5E5BF8050E4284",
]
# [OEMV256], page 10 and page 12.
AES256_SKIP = {
    0x0001FFFE: "A289508CBF1228452CD86AB77B15CB35577AC828C18BB66681E5A16D6C9CCED3",
    0x0001FFFF: "7C1F24BC33C5B146E1D3015126F4AC2E0C48AC080DC9234137B82890E8E91FB8",
    0x00020000: "D62DDA94A47D7DA5D763443B4ECB15EA8DD62E0E4F915958BA459591F8312E37",
    0x00020001: "44110A1102748D4A3AC326F53D8CAC650212590CA7126D54546DDE0F20E89CEE",
}
AES256_LAST = {
    0xFFFE2000: "4625EB06E4886D4AFCC9AE37ED4F4E4E1653C9E60E3F24742A87A26AA96AB7A6",
    0xFFFE4000: "FF20E1BB575539ACCB44E3111BE8757F83AE8549A2DD71B441A4A424F7FFD4B1",
    0xFFFE8000: "630535C9C53E1EC6524016930B56F6728909C45403536B419AEBCB25B7351C07",
    0xFFFF0000: "6D6DB7AAAE8B3EA90E57A39E4BBA71E173B21B446B30A78D64BFC6A8806C55EE",
}


def terminal_at(initial_key: bytes, counter: int, key_type: KeyType = KeyType.AES128) -> TerminalDukpt:
    """A terminal whose next transaction uses `counter`, without running the counters before it.

    X9.24-3 6.1: before counter c is used, the register of c's lowest set bit holds c's key and
    the register of every clear bit i above it holds the key of (c's bits above i) + 2^i; the
    others are empty. The keys come from the host method; the layout is the one `state()`
    documents.
    """
    lowest = (counter & -counter).bit_length() - 1
    registers = []
    bitmap = 0
    for bit in range(32):
        if bit == lowest:
            target = counter
        elif bit > lowest and not counter >> bit & 1:
            target = (counter >> (bit + 1) << (bit + 1)) | 1 << bit
        else:
            registers.append(bytes(key_type.key_length))
            continue
        bitmap |= 1 << bit
        registers.append(transaction_key_from_initial_key(initial_key, ksn(target), key_type))
    state = (bytes([1]) + int(key_type).to_bytes(2, "big") + IKID + counter.to_bytes(8, "big")
             + bitmap.to_bytes(4, "big") + b"".join(registers))
    return TerminalDukpt.from_state(state)


# --- published vectors: host side ---------------------------------------------------------


def test_initial_keys() -> None:
    # [OEMV128], [OEMV256].
    assert derive_initial_key(BDK128, IKID) == IK128
    assert derive_initial_key(BDK256, IKID, KeyType.AES256) == IK256


def test_initial_key_is_one_block_of_the_published_derivation_data() -> None:
    # X9.24-3-2017 B.1 example, as reproduced by CryptoScript's DUKPT-AES-INITIAL-KEY page:
    # derivation data 01 01 8001 0002 0080 1234567890123456, enciphered under the BDK.
    encryptor = Cipher(algorithms.AES(BDK128), modes.ECB()).encryptor()
    block = encryptor.update(bytes.fromhex("01018001000200801234567890123456")) + encryptor.finalize()
    assert block == IK128 == derive_initial_key(BDK128, IKID)


@pytest.mark.parametrize("index", range(8))
def test_aes128_bdk_first_eight_counters(index: int) -> None:
    # [OEMV128]: transaction, PIN, MAC generation and data encryption keys.
    serial = ksn(index + 1)
    transaction_key = host_transaction_key(BDK128, serial)
    assert transaction_key.hex().upper() == AES128_TRANSACTION[index]
    assert transaction_key_from_initial_key(IK128, serial) == transaction_key
    for usage, expected in ((KeyUsage.PIN_ENCRYPTION, AES128_PIN), (KeyUsage.MAC_GENERATION, AES128_MAC),
                            (KeyUsage.DATA_ENCRYPTION_ENCRYPT, AES128_DATA)):
        assert working_key(transaction_key, serial, usage, KeyType.AES128).hex().upper() == expected[index]


@pytest.mark.parametrize("index", range(8))
def test_aes256_bdk_first_eight_counters(index: int) -> None:
    # [OEMV256]: AES-128 and AES-256 working keys from the AES-256 transaction key.
    serial = ksn(index + 1)
    transaction_key = host_transaction_key(BDK256, serial, KeyType.AES256)
    assert transaction_key.hex().upper() == AES256_TRANSACTION[index]
    cases = (
        (KeyUsage.PIN_ENCRYPTION, KeyType.AES128, AES256_PIN_128),
        (KeyUsage.MAC_GENERATION, KeyType.AES128, AES256_MAC_128),
        (KeyUsage.DATA_ENCRYPTION_ENCRYPT, KeyType.AES128, AES256_DATA_128),
        (KeyUsage.PIN_ENCRYPTION, KeyType.AES256, AES256_PIN_256),
        (KeyUsage.MAC_GENERATION, KeyType.AES256, AES256_MAC_256),
        (KeyUsage.DATA_ENCRYPTION_ENCRYPT, KeyType.AES256, AES256_DATA_256),
    )
    for usage, key_type, expected in cases:
        assert working_key(transaction_key, serial, usage, key_type).hex().upper() == expected[index]


@pytest.mark.parametrize(("bdk", "key_type", "vectors"), [
    (BDK128, KeyType.AES128, {**AES128_SKIP, **AES128_LAST}),
    (BDK256, KeyType.AES256, {**AES256_SKIP, **AES256_LAST}),
], ids=["AES-128 BDK", "AES-256 BDK"])
def test_counters_around_the_first_skip_and_at_the_end(bdk: bytes, key_type: KeyType,
                                                        vectors: dict[int, str]) -> None:
    # [OEMV128] pages 5-6, [OEMV256] pages 10-12. 0x1FFFF has 17 one bits: no terminal uses it,
    # so the host refuses it unless asked for the standard's own vector.
    initial_key = derive_initial_key(bdk, IKID, key_type)
    for counter, expected in vectors.items():
        if counter == 0x1FFFF:
            with pytest.raises(DukptError, match="never used"):
                host_transaction_key(bdk, ksn(counter), key_type)
            key = transaction_key_from_initial_key(initial_key, ksn(counter), key_type,
                                                   allow_unreachable=True)
        else:
            key = host_transaction_key(bdk, ksn(counter), key_type)
        assert key.hex().upper() == expected, hex(counter)


@pytest.mark.parametrize(("usage", "expected"), [
    # [PAYSEC] test_all_working_key_usages_aes_128_counter_1; [CSCRIPT] for the MAC and data ones.
    (KeyUsage.KEY_ENCRYPTION_KEY, "36A724B7BEFA5A25F5E7B5782A4554A2"),
    (KeyUsage.PIN_ENCRYPTION, "AF8CB133A78F8DC2D1359F18527593FB"),
    (KeyUsage.MAC_GENERATION, "A2DC23DE6FDE0824A2BC321E08E4B8B7"),
    (KeyUsage.MAC_VERIFICATION, "DBB463945B286C07CD3AD82EE96FD9C9"),
    (KeyUsage.MAC_BOTH_WAYS, "85675439D18D7F1158BD8E3EAA3D502B"),
    (KeyUsage.DATA_ENCRYPTION_ENCRYPT, "A35C412EFD41FDB98B69797C02DCD08F"),
    (KeyUsage.DATA_ENCRYPTION_DECRYPT, "16292C6EA8F64C5420A0584BFBC577BE"),
    (KeyUsage.DATA_ENCRYPTION_BOTH_WAYS, "A308E080DD15A1B741F1721BF67DE11C"),
    (KeyUsage.KEY_DERIVATION, "30E54D3C69B22501A7FC43969D81D5C0"),
])
def test_every_usage_at_counter_one(usage: KeyUsage, expected: str) -> None:
    transaction_key = host_transaction_key(BDK128, ksn(1))
    assert working_key(transaction_key, ksn(1), usage, KeyType.AES128).hex().upper() == expected


@pytest.mark.parametrize(("counter", "pin", "mac", "data"), [
    # [PAYSEC] AES_128_VECTORS.
    (0x1FFFE, "DDF7E08A84B5478C498D007C743BF762", "6D7623AD652734B8FAE1B6E093EACE3D",
     "8E4E5D5E0F01C54F01F4ACA1C8F8EDCE"),
    (0x1FFFF, "73BA667D6368A2086E72576DF41A4037", "8B543DCF4A31EA3AB47DAD16B8ABD404",
     "D18ACA30B4D63DB61CE474D3F57733D3"),
    (0x20000, "AB828BE7B58C7EC5D5ED0D5D320A0C9D", "0B59D3D7D93028D97135FB895CACE24E",
     "13361208975755318FE7AE28C9616014"),
])
def test_working_keys_around_the_first_skip(counter: int, pin: str, mac: str, data: str) -> None:
    serial = ksn(counter)
    key = transaction_key_from_initial_key(IK128, serial, allow_unreachable=True)
    assert working_key(key, serial, KeyUsage.PIN_ENCRYPTION, KeyType.AES128).hex().upper() == pin
    assert working_key(key, serial, KeyUsage.MAC_GENERATION, KeyType.AES128).hex().upper() == mac
    assert working_key(key, serial, KeyUsage.DATA_ENCRYPTION_ENCRYPT, KeyType.AES128).hex().upper() == data


@pytest.mark.parametrize(("key_type", "usage", "expected"), [
    # [CSCRIPT] AnnexBVectorsCoverTdeaWorkingKeyTypes (PIN); the rest from the same suites'
    # YAML digest. TDEA keys are raw derivation output: DES parity is not adjusted.
    (KeyType.TDEA2, KeyUsage.PIN_ENCRYPTION, "630C706D9546E47D4449313F61C4D4AB"),
    (KeyType.TDEA2, KeyUsage.MAC_GENERATION, "5D8FD787E8A796D07035FFCA9B5800BB"),
    (KeyType.TDEA2, KeyUsage.DATA_ENCRYPTION_ENCRYPT, "BD44121C223F831446A01EE3A4CB58D2"),
    (KeyType.TDEA3, KeyUsage.PIN_ENCRYPTION, "EA8B3F37EB9B15831167EF2977FD8762D9B5913F35766F6A"),
    (KeyType.TDEA3, KeyUsage.MAC_GENERATION, "2A1061A6EAC2C14FAC3758EA07B3648A624B24E942785BF1"),
    (KeyType.TDEA3, KeyUsage.DATA_ENCRYPTION_ENCRYPT, "F716DFBC6B2D2D5825B694EEEE181A013F2F1C09380BBE0C"),
])
def test_tdea_working_keys_from_the_aes128_bdk(key_type: KeyType, usage: KeyUsage, expected: str) -> None:
    transaction_key = host_transaction_key(BDK128, ksn(1))
    assert working_key(transaction_key, ksn(1), usage, key_type).hex().upper() == expected


@pytest.mark.parametrize(("counter", "working_type", "pin", "mac", "data"), [
    # Not in the X9 publication (no AES-192 suite there): [PAYSEC]'s AES_192_TO_AES_128 and
    # AES_192_TO_AES_192 vectors, "generated using the ASC X9 X9.24-3 reference algorithm", for
    # the BDK FEDCBA9876543210F1F1F1F1F1F1F1F1FEDCBA9876543210. An independent computation.
    (1, KeyType.AES128, "3C318CDBF08322279557201E98DBB3F3", "3E7009C74E8166BC9059D3D92D36B487",
     "04C5C3926A8B9B2B833F33D4C6E581EE"),
    (3, KeyType.AES128, "6DE9A0A37D6927280B7E223C4BE7580F", "D2D13AF44E71EB6E8539FFDA3C37A5D6",
     "FDCB88BEA1EFE48EAEE83A48513FF515"),
    (1, KeyType.AES192, "C5043EDC7F2C001097974D40FF82A050B64A1AB27879F3DB",
     "7FB32FB0F68F0E4A2594765F9EB1C472727EE305A5EE35E1", "C1D4541AE0E33949DD03F2A10B5E5486BBCAC1C520320E0C"),
    (3, KeyType.AES192, "64AE12F5E0FB2001B22520CED9C5CF1A8AA45AAA3F264882",
     "29A29A9C943EAA03D2F5CAD146BA765094C2CF0343C53D1A", "A5DDCE36A4ECC8781C466C2270BA499EC4654AA166392EFC"),
])
def test_aes192_bdk(counter: int, working_type: KeyType, pin: str, mac: str, data: str) -> None:
    bdk = bytes.fromhex("FEDCBA9876543210F1F1F1F1F1F1F1F1FEDCBA9876543210")
    serial = ksn(counter)
    key = host_transaction_key(bdk, serial, KeyType.AES192)
    assert working_key(key, serial, KeyUsage.PIN_ENCRYPTION, working_type).hex().upper() == pin
    assert working_key(key, serial, KeyUsage.MAC_GENERATION, working_type).hex().upper() == mac
    assert working_key(key, serial, KeyUsage.DATA_ENCRYPTION_ENCRYPT, working_type).hex().upper() == data


# --- published vectors: terminal side ------------------------------------------------------


def test_terminal_first_eight_transactions_decipher_the_published_pin_blocks() -> None:
    # [OEMV128]: the supplement's eight enciphered format 4 PIN blocks open, under the PIN keys
    # the terminal derives, to PIN 1234 with PAN 4111111111111111 (psec's ISO 9564 format 4).
    terminal = TerminalDukpt.load(IK128, IKID)
    for index in range(8):
        serial, transaction_key = terminal.next()
        assert serial == ksn(index + 1)
        assert transaction_key.hex().upper() == AES128_TRANSACTION[index]
        pin_key = working_key(transaction_key, serial, KeyUsage.PIN_ENCRYPTION, KeyType.AES128)
        assert pin_key.hex().upper() == AES128_PIN[index]
        assert decipher_pinblock_iso_4(pin_key, bytes.fromhex(AES128_PIN_BLOCKS[index]), PAN) == PIN


def test_terminal_aes256_first_eight_transactions() -> None:
    # [OEMV256].
    terminal = TerminalDukpt.load(IK256, IKID, KeyType.AES256)
    assert [terminal.next()[1].hex().upper() for _ in range(8)] == AES256_TRANSACTION


@pytest.mark.parametrize(("initial_key", "key_type", "last"), [
    (IK128, KeyType.AES128, AES128_LAST),
    (IK256, KeyType.AES256, AES256_LAST),
], ids=["AES-128 BDK", "AES-256 BDK"])
def test_terminal_runs_to_the_end_of_the_counter(initial_key: bytes, key_type: KeyType,
                                                 last: dict[int, str]) -> None:
    # From FFFE0000 (15 one bits) every later counter of at most 16 one bits is used, in order;
    # the last four keys are published ([OEMV128] page 6, [OEMV256] page 12); then the counter
    # is exhausted.
    terminal = terminal_at(initial_key, 0xFFFE0000, key_type)
    expected = [c for c in range(0xFFFE0000, 2**32) if reachable(c)]
    used = []
    keys = {}
    while not terminal.exhausted:
        serial, key = terminal.next()
        counter = split_ksn(serial)[1]
        used.append(counter)
        keys[counter] = key.hex().upper()
    assert used == expected
    assert {c: keys[c] for c in last} == last
    for _ in range(2):
        with pytest.raises(DukptExhaustedError):
            terminal.next()
    assert terminal.counter == COUNTER_LIMIT


# --- terminal and host agree ----------------------------------------------------------------


def test_terminal_and_host_agree_over_the_first_2000_counters() -> None:
    terminal = TerminalDukpt.load(derive_initial_key(BDK128, IKID), IKID)
    for counter in range(1, 2001):
        serial, key = terminal.next()
        assert serial == ksn(counter)
        assert key == host_transaction_key(BDK128, serial)


@pytest.mark.parametrize("start", [0x1FFF0, 0x7FFF7FF0, 0x00FFFEF0, 0x5555FFF0, 0xFFFC0000])
def test_terminal_skips_counters_with_more_than_16_one_bits(start: int) -> None:
    # Each window holds counters of 17 or more one bits (after 7FFF8000 the next one is
    # 80000000); the terminal uses exactly the others, in order, and the host agrees on every key.
    expected: list[int] = []
    counter = start
    while len(expected) < 64:
        if reachable(counter):
            expected.append(counter)
        counter += 1
    terminal = terminal_at(IK128, expected[0])
    for counter in expected:
        serial, key = terminal.next()
        assert split_ksn(serial)[1] == counter
        assert key == transaction_key_from_initial_key(IK128, serial)


@settings(max_examples=60, deadline=None)
@given(bits=st.sets(st.integers(0, 31), min_size=1, max_size=16), steps=st.integers(1, 4))
def test_terminal_and_host_agree_at_random_reachable_counters(bits: set[int], steps: int) -> None:
    counter = sum(1 << bit for bit in bits)
    terminal = terminal_at(IK128, counter)
    previous = counter - 1
    for _ in range(steps):
        if terminal.exhausted:
            with pytest.raises(DukptExhaustedError):
                terminal.next()
            return
        serial, key = terminal.next()
        used = split_ksn(serial)[1]
        assert reachable(used)
        assert used > previous
        assert not any(reachable(c) for c in range(previous + 1, min(used, previous + 0x1000)))
        assert key == host_transaction_key(BDK128, serial)
        previous = used


@settings(max_examples=100, deadline=None)
@given(serial=st.binary(min_size=12, max_size=12))
def test_any_twelve_byte_ksn_gives_a_key_exactly_when_a_terminal_could_send_it(serial: bytes) -> None:
    counter = int.from_bytes(serial[8:], "big")
    if reachable(counter):
        key = host_transaction_key(BDK128, serial)
        assert len(key) == 16
        assert len(working_key(key, serial, KeyUsage.MAC_GENERATION, KeyType.AES128)) == 16
    else:
        with pytest.raises(DukptError):
            host_transaction_key(BDK128, serial)


def test_pin_block_from_the_terminal_deciphers_at_the_host() -> None:
    terminal = TerminalDukpt.load(derive_initial_key(BDK128, IKID), IKID)
    for _ in range(5):
        terminal.next()
    serial, transaction_key = terminal.next()
    block = encipher_pinblock_iso_4(pin_key(transaction_key, serial), "98765", PAN)
    host_key = pin_key(host_transaction_key(BDK128, serial), serial)
    assert decipher_pinblock_iso_4(host_key, block, PAN) == "98765"
    # The neighbour KSN's key does not open it.
    other = ksn(split_ksn(serial)[1] + 1)
    wrong_key = pin_key(host_transaction_key(BDK128, other), other)
    with contextlib.suppress(ValueError):  # psec refuses what is not a format 4 block
        assert decipher_pinblock_iso_4(wrong_key, block, PAN) != "98765"


# --- state --------------------------------------------------------------------------------


def test_state_round_trip_continues_the_same_sequence() -> None:
    terminal = TerminalDukpt.load(IK128, IKID)
    for _ in range(37):
        terminal.next()
    copy = TerminalDukpt.from_state(terminal.state())
    assert copy.state() == terminal.state()
    assert copy.counter == terminal.counter == 38
    assert [copy.next() for _ in range(100)] == [terminal.next() for _ in range(100)]


def test_every_state_the_terminal_writes_reads_back() -> None:
    terminal = TerminalDukpt.load(IK256, IKID, KeyType.AES256)
    for _ in range(300):
        state = terminal.state()
        assert TerminalDukpt.from_state(state).state() == state
        terminal.next()


def test_exhausted_state_round_trips_and_stays_exhausted() -> None:
    terminal = terminal_at(IK128, 0xFFFF0000)
    assert split_ksn(terminal.next()[0])[1] == 0xFFFF0000
    copy = TerminalDukpt.from_state(terminal.state())
    assert copy.exhausted
    with pytest.raises(DukptExhaustedError):
        copy.next()


def _state_fields(terminal: TerminalDukpt) -> bytearray:
    return bytearray(terminal.state())


@pytest.mark.parametrize(("offset", "value", "reason"), [
    (0, 2, "version"),
    (2, 0x00, "TDEA2 cannot be a derivation key"),  # algorithm indicator 0000: 2TDEA
    (18, 0x00, "not one a terminal reaches"),  # counter 0
    (22, 0x07, "do not match"),  # register bitmap
])
def test_damaged_state_is_refused(offset: int, value: int, reason: str) -> None:
    data = _state_fields(TerminalDukpt.load(IK128, IKID))
    data[offset] = value
    with pytest.raises(DukptError, match=reason):
        TerminalDukpt.from_state(bytes(data))


def test_state_with_a_key_in_an_empty_register_is_refused() -> None:
    terminal = TerminalDukpt.load(IK128, IKID)
    terminal.next()  # register 0 is now empty
    data = _state_fields(terminal)
    data[23] ^= 0x01
    with pytest.raises(DukptError, match="empty register"):
        TerminalDukpt.from_state(bytes(data))


@pytest.mark.parametrize("cut", [0, 10, 22, 23, 534])
def test_truncated_state_is_refused(cut: int) -> None:
    data = TerminalDukpt.load(IK128, IKID).state()
    assert len(data) == 535
    with pytest.raises(DukptError):
        TerminalDukpt.from_state(data[:cut])
    with pytest.raises(DukptError):
        TerminalDukpt.from_state(data + b"\x00")


VALID_STATES = [TerminalDukpt.load(IK128, IKID).state(), terminal_at(IK256, 0x845FED, KeyType.AES256).state()]


@settings(max_examples=300)
@given(data=st.one_of(
    st.binary(max_size=1100),
    st.tuples(st.sampled_from(VALID_STATES), st.lists(st.tuples(st.integers(0, 1046), st.integers(0, 255)),
                                                        max_size=3))
    .map(lambda base_edits: bytes(_edited(*base_edits))),
))
def test_state_parser_accepts_or_raises_its_own_error(data: bytes) -> None:
    try:
        terminal = TerminalDukpt.from_state(data)
    except DukptError:
        return
    assert terminal.state() == data


def _edited(base: bytes, edits: list[tuple[int, int]]) -> bytearray:
    data = bytearray(base)
    for offset, value in edits:
        data[offset % len(data)] = value
    return data


# --- hygiene and bad input -------------------------------------------------------------------


def test_repr_and_errors_hold_no_key() -> None:
    terminal = TerminalDukpt.load(IK128, IKID)
    registers = terminal.state()[23:]
    secrets = [IK128.hex(), *(registers[i:i + 16].hex() for i in range(0, len(registers), 16))]
    text = repr(terminal)
    assert text == "TerminalDukpt(AES128, next KSN 12345678 90123456 00000001)"
    with pytest.raises(DukptError) as info:
        derive_initial_key(IK128 + b"\x00", IKID)
    for shown in (text, str(info.value)):
        for secret in secrets:
            assert secret.lower() not in shown.lower()


@pytest.mark.parametrize("call", [
    lambda: derive_initial_key(BDK128[:15], IKID),
    lambda: derive_initial_key(BDK128, IKID[:7]),
    lambda: derive_initial_key(BDK128, IKID, KeyType.AES256),
    lambda: derive_initial_key(BDK128, IKID, KeyType.TDEA2),
    lambda: derive_initial_key(bytearray(BDK128), IKID),
    lambda: derive_initial_key(BDK128, IKID, 9),
    lambda: host_transaction_key(BDK128, ksn(1)[:11]),
    lambda: host_transaction_key(BDK128, ksn(1) + b"\x00"),
    lambda: host_transaction_key(BDK128, ksn(0)),
    lambda: host_transaction_key(BDK128, ksn(0xFFFFFFFF)),
    lambda: transaction_key_from_initial_key(IK128[:8], ksn(1)),
    lambda: working_key(IK128[:15], ksn(1), KeyUsage.PIN_ENCRYPTION, KeyType.AES128),
    lambda: working_key(IK128, ksn(1)[:11], KeyUsage.PIN_ENCRYPTION, KeyType.AES128),
    lambda: working_key(IK128, ksn(1), KeyUsage.PIN_ENCRYPTION, KeyType.AES256),  # stronger (6.1.3)
    lambda: working_key(IK128, ksn(1), KeyUsage.PIN_ENCRYPTION, KeyType.AES192),
    lambda: working_key(IK128, ksn(1), KeyUsage.KEY_DERIVATION_INITIAL_KEY, KeyType.AES128),
    lambda: working_key(IK128, ksn(1), 0x1234, KeyType.AES128),
    lambda: working_key(IK128, ksn(1), "PIN", KeyType.AES128),
    lambda: TerminalDukpt.load(IK128[:15], IKID),
    lambda: TerminalDukpt.load(IK128, IKID + b"\x00"),
    lambda: TerminalDukpt.load(IK128, IKID, KeyType.TDEA3),
    lambda: TerminalDukpt.load(IK128, IKID, KeyType.AES256),
    lambda: TerminalDukpt.from_state("not bytes"),
    lambda: format_ksn(ksn(1)[:11]),
    lambda: split_ksn(b""),
])
def test_bad_input_raises_dukpt_error(call: object) -> None:
    with pytest.raises(DukptError):
        call()  # type: ignore[operator]


def test_working_keys_no_stronger_than_their_transaction_key_are_allowed() -> None:
    key = host_transaction_key(BDK256, ksn(1), KeyType.AES256)
    lengths = {kt: len(working_key(key, ksn(1), KeyUsage.DATA_ENCRYPTION_BOTH_WAYS, kt)) for kt in KeyType}
    assert lengths == {KeyType.TDEA2: 16, KeyType.TDEA3: 24, KeyType.AES128: 16, KeyType.AES192: 24,
                       KeyType.AES256: 32}


def test_format_and_split_ksn() -> None:
    assert format_ksn(ksn(0x845FED)) == "12345678 90123456 00845FED"
    assert split_ksn(ksn(0x845FED)) == (IKID, 0x845FED)


@given(data=st.binary(max_size=16))
def test_format_ksn_formats_or_raises_its_own_error(data: bytes) -> None:
    try:
        text = format_ksn(data)
    except DukptError:
        assert len(data) != 12
        return
    assert bytes.fromhex(text.replace(" ", "")) == data
