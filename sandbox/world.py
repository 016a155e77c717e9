"""A deterministic, cross-consistent world of residents, companies and their records.

Everything is drawn from ``random.Random`` instances seeded from the build seed (one
sub-stream per stage, so adding a stage does not reshuffle the others); there is no global
random state and no Faker. The world holds *clean* records only: every value here passes
every check of the shared spec. :mod:`sandbox.build` injects the defects afterwards.

Consistency kept on purpose (tests rely on it):

- resident IDs are GB 11643 valid, their birthplace code existed in the birth year
  (python-stdnum's division list), the embedded birth date is the birth date;
- every person a record refers to is a resident of the household register, every company
  a record refers to is in the business register; names always match the referenced person;
- spouses in marriage records are resident men and women of marrying age; a divorce
  follows its marriage; children born 2015+ have a birth certificate naming their parents,
  who were married before the birth; school-age children have a 学籍 record;
- a few residents (``isolated``: moved out, deceased or unlinked) and inactive companies
  appear in no other resource, so :mod:`sandbox.build` can damage their key without
  leaving other resources pointing at a key that no longer exists (revoked companies carry
  credit records, so they are not among them);
- credit records name the registry's entity name and legal representative.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import cache, partial

from quality.divisions import DivisionReference, load_divisions
from quality.identifiers import make_resident_id, make_uscc

DEFAULT_SEED = 20261122
DEFAULT_RUN_DATE = date(2026, 11, 22)

# Base sizes at scale 1.0; every other count follows from these and the probabilities below.
N_RESIDENTS = 2200
N_COMPANIES = 300
N_NURSES = 90
ADULT_SHARE = 0.72  # the rest are children of resident couples, born 2001-2024
ISOLATED_SHARE = 0.06  # adults linked to nothing else: targets for key-damaging defects
STALE_DAYS = {"RK-RS-0002": 40}  # the employment export stopped 40 days before the run date

# --- name and place vocabularies ---------------------------------------------------------

# Common surnames, most frequent first (weights fall off with rank), plus a few compound ones.
SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓曹彭曾肖田董潘袁蔡蒋余于杜叶程"
                "魏苏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦方白邹孟熊秦邱江尹薛段雷侯龙史陶黎贺顾毛郝"
                "龚邵万钱严覃武戴莫孔向汤应楼童俞骆舒")
COMPOUND_SURNAMES = ["欧阳", "司马", "上官", "诸葛"]
MALE_OLD = "建国庆华军明强伟文武德志勇忠诚永福林海平安荣生发兴才富贵宝根祥康金水松"
FEMALE_OLD = "秀英桂兰芳珍凤玉梅琴红霞美丽娟敏华萍燕云香月彩菊素翠"
MALE_MID = "伟强磊军勇杰涛斌超明刚平辉鹏华飞鑫波宇浩凯健俊帆旭宁龙林阳峰亮成东海斌"
FEMALE_MID = "芳娜敏静丽艳娟霞玲萍红燕洁琳雪梅婷慧颖倩晶月佳丹蓉琴瑶欣怡璐"
MALE_YOUNG = "子轩浩宇梓睿博文俊熙辰泽一航铭皓晨奕嘉昊宸煜哲瑞"
FEMALE_YOUNG = "梓涵欣怡诗雨可馨一诺思语若汐依彤悦芷琪萱沐安"
# Outside GBK (CJK Ext. A): a few newborns carry them, which is why the birth file is GB18030.
GB18030_ONLY = ["䶮", "㛃"]

ETHNICITIES = [("汉族", 940), ("畲族", 20), ("回族", 10), ("土家族", 10), ("苗族", 10), ("满族", 5), ("壮族", 5)]
ROADS = ["解放路", "中山路", "人民路", "建设路", "文化路", "新华路", "延安路", "凤起路", "学院路", "天目山路",
         "文三路", "东风路", "南湖路", "江滨路", "府前路", "胜利路", "和平路", "青年路", "城东路", "钱江路",
         "湖滨路", "望江路", "塘河路", "越秀路", "开元路", "长安路", "环城北路", "世纪大道"]
ESTATES = ["阳光", "锦绣", "和园", "翠苑", "金色", "东方", "绿城", "明珠", "嘉苑", "花园", "景苑", "江南", "桂花",
           "桃源", "紫金"]
ESTATE_KIND = ["小区", "花苑", "公寓", "家园", "新村"]
TOWNS = ["城关", "新塘", "临江", "龙山", "白沙", "石桥", "桥头", "梅溪", "清溪", "古城"]
VILLAGES = ["上王", "下徐", "东湖", "西岙", "南山", "北塘", "前陈", "后周", "大岭", "小溪"]
AREA_CODES = {"3301": "0571", "3302": "0574", "3303": "0577", "3304": "0573", "3305": "0572", "3306": "0575",
              "3307": "0579", "3308": "0570", "3309": "0580", "3310": "0576", "3311": "0578"}
MOBILE_PREFIXES = ["130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152", "153",
                   "155", "156", "157", "158", "159", "166", "176", "177", "178", "180", "181", "182", "183",
                   "185", "186", "187", "188", "189", "191", "198", "199"]
OTHER_PROVINCES = ["34", "36", "41", "51", "52", "32", "35", "43", "42", "45"]

BRANDS = ["恒泰", "华创", "信达", "博远", "众诚", "天成", "鼎盛", "锦程", "瑞丰", "宏图", "新锐", "盛世", "汇通",
          "嘉禾", "万象", "启明", "远航", "金桥", "同创", "正源", "海纳", "卓越", "聚力", "安达", "德润", "和信",
          "中联", "永盛", "昌隆", "惠民", "格致", "云帆", "青禾", "明远", "星辰"]
INDUSTRIES = {
    "科技": "软件开发；信息技术咨询服务；技术服务、技术开发、技术咨询、技术交流、技术转让、技术推广",
    "网络科技": "互联网数据服务；网络技术服务；软件开发；广告设计、代理",
    "电子商务": "互联网销售（除销售需要许可的商品）；日用百货销售；供应链管理服务",
    "贸易": "货物进出口；技术进出口；五金产品批发；建筑材料销售；纺织品销售",
    "建材": "建筑材料销售；轻质建筑材料制造；水泥制品销售",
    "服装": "服装制造；服装服饰批发；针纺织品销售",
    "食品": "食品销售（仅销售预包装食品）；农副产品销售；食用农产品批发",
    "物流": "普通货物仓储服务；国内货物运输代理；装卸搬运",
    "餐饮管理": "餐饮管理；餐饮服务（不产生油烟、异味、废气）；食品销售",
    "文化传媒": "组织文化艺术交流活动；广告制作；会议及展览服务",
    "建筑工程": "建设工程施工；住宅室内装饰装修；园林绿化工程施工",
    "机械制造": "通用设备制造（不含特种设备制造）；机械零件、零部件加工",
    "医疗器械": "第一类医疗器械销售；第二类医疗器械销售；卫生用品销售",
    "环保科技": "环保咨询服务；水污染治理；固体废物治理",
    "信息技术": "信息系统集成服务；数据处理和存储支持服务；计算机系统服务",
    "教育咨询": "教育咨询服务（不含涉许可审批的教育培训活动）；业务培训",
    "农业开发": "农作物种植；水果种植；农产品的生产、销售、加工、运输、贮藏",
    "新材料": "新材料技术研发；塑料制品制造；合成材料销售",
    "汽车服务": "汽车零配件零售；机动车修理和维护；汽车租赁",
    "印刷": "包装装潢印刷品印刷；文件、资料等其他印刷品印刷",
}
SHOPS = ["便利店", "小吃店", "五金店", "服装店", "理发店", "水果店", "家电维修部", "副食品店"]
# (entity type, USCC authority+type prefix, weight)
ENTITY_TYPES = [
    ("有限责任公司（自然人投资或控股）", "91", 45), ("有限责任公司（自然人独资）", "91", 15),
    ("股份有限公司（非上市、自然人投资或控股）", "91", 5), ("个人独资企业", "91", 8),
    ("普通合伙企业", "91", 4), ("个体工商户", "92", 20), ("农民专业合作社", "93", 3),
]
USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"

# (name, 5-digit school code modelled on the national list, kind) kind: univ / college / medical
UNIVERSITIES = [("浙江大学", "10335"), ("杭州电子科技大学", "10336"), ("浙江工业大学", "10337"),
                ("浙江理工大学", "10338"), ("浙江海洋大学", "10340"), ("浙江农林大学", "10341"),
                ("浙江师范大学", "10345"), ("杭州师范大学", "10346"), ("浙江财经大学", "10351"),
                ("浙江工商大学", "10353"), ("中国美术学院", "10355"), ("中国计量大学", "10356"),
                ("宁波大学", "11646"), ("温州大学", "10347"), ("绍兴文理学院", "10349")]
COLLEGES = [("浙江金融职业学院", "12061"), ("金华职业技术学院", "11549"), ("宁波职业技术学院", "11861"),
            ("杭州职业技术学院", "12022"), ("温州职业技术学院", "11843"), ("浙江机电职业技术学院", "12067"),
            ("浙江交通职业技术学院", "12071")]
MEDICAL_UNIV = [("温州医科大学", "10343"), ("浙江中医药大学", "10344"), ("杭州师范大学", "10346")]
MEDICAL_COLLEGES = [("浙江医药高等专科学校", "12860"), ("金华职业技术学院", "11549"), ("宁波卫生职业技术学院", "13028")]
MAJORS = ["计算机科学与技术", "软件工程", "电子信息工程", "机械设计制造及其自动化", "土木工程", "会计学",
          "金融学", "国际经济与贸易", "市场营销", "法学", "汉语言文学", "英语", "数学与应用数学",
          "临床医学", "药学", "工商管理", "财务管理", "电气工程及其自动化", "化学工程与工艺", "建筑学",
          "小学教育", "学前教育", "环境工程", "物流管理", "视觉传达设计", "食品科学与工程"]
COLLEGE_MAJORS = ["会计", "计算机应用技术", "机电一体化技术", "电子商务", "物流管理", "建筑工程技术",
                  "市场营销", "旅游管理", "汽车检测与维修技术", "国际贸易实务", "学前教育"]
LEVEL_DIGIT = {"博士研究生": "1", "硕士研究生": "2", "本科": "5", "专科": "6"}
DEGREE_OF = {"本科": "学士", "硕士研究生": "硕士", "博士研究生": "博士", "专科": None}
GRADES = ["一年级", "二年级", "三年级", "四年级", "五年级", "六年级", "七年级", "八年级", "九年级",
          "高一", "高二", "高三"]
SCHOOL_PREFIX = ["实验", "第一", "第二", "城南", "城北", "东方", "育才", "新华", "文澜", "崇文"]

# Public credit records (公共信用信息). Licences by a keyword of the business scope: (keyword,
# licence, issuing department, decision-number abbreviation, years valid).
CREDIT_LICENCES = [("食品", "食品经营许可", "市场监督管理局", "市监许", 5),
                   ("运输", "道路运输经营许可", "交通运输局", "交运许", 6),
                   ("建设工程施工", "建筑业企业资质许可", "住房和城乡建设局", "建许", 5),
                   ("医疗器械", "第二类医疗器械经营许可", "市场监督管理局", "市监械许", 5),
                   ("印刷", "印刷经营许可", "新闻出版局", "新出许", 6),
                   ("制造", "排污许可", "生态环境局", "环许", 5)]
# (department, abbreviation, cause, penalty) of the everyday administrative penalties.
CREDIT_PENALTIES = [("市场监督管理局", "市监处罚", "发布虚假广告", "责令停止发布，罚款人民币20000元"),
                    ("市场监督管理局", "市监处罚", "销售不符合食品安全标准的食品", "没收违法所得，罚款人民币5000元"),
                    ("生态环境局", "环罚", "超标排放水污染物", "责令改正，罚款人民币100000元"),
                    ("应急管理局", "应急罚", "未按规定开展安全生产教育和培训", "罚款人民币30000元"),
                    ("税务局", "税罚", "未按照规定期限办理纳税申报", "罚款人民币2000元")]


# --- small date helpers --------------------------------------------------------------------

def add_years(d: date, years: int) -> date:
    """``d`` plus whole years; 29 February falls back to the 28th."""
    try:
        return d.replace(year=d.year + years)
    except ValueError:
        return d.replace(year=d.year + years, day=28)


def add_months(d: date, months: int) -> date:
    """``d`` plus whole months, clamped to the month's last day."""
    m = d.month - 1 + months
    y, m = d.year + m // 12, m % 12 + 1
    for day in (d.day, 30, 29, 28):
        try:
            return date(y, m, day)
        except ValueError:
            continue
    raise AssertionError("unreachable")


def rand_date(rng: random.Random, lo: date, hi: date) -> date:
    """Uniform date in [lo, hi]; ``lo`` when the range is empty."""
    span = (hi - lo).days
    return lo if span <= 0 else lo + timedelta(days=rng.randint(0, span))


def age_on(birth: date, day: date) -> int:
    """Completed years of age on ``day``."""
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


# --- entities --------------------------------------------------------------------------------

@dataclass
class Resident:
    rid: str
    name: str
    gender: str  # 男 / 女
    birth: date
    ethnicity: str
    birthplace: str  # division code embedded in the ID
    division: str = ""  # current household-register county (current code)
    address: str = ""
    phone: str | None = None
    household_no: str = ""
    relation: str = "户主"
    status: str = "正常"
    isolated: bool = False
    married: bool = False  # currently married (for loans: the spouse)
    spouse: str | None = None
    father: str | None = None
    mother: str | None = None
    career_start: date | None = None  # graduation (or 18th birthday) for job generation
    employer: str | None = None  # uscc of the employing company
    job_start: date | None = None
    hospital: tuple[str, str] | None = None  # nurses: (institution, division)


@dataclass
class Company:
    uscc: str
    name: str
    legal_rep: str  # resident id
    division: str
    address: str
    entity_type: str
    established: date
    capital: Decimal | None
    scope: str
    authority: str
    status: str
    phone: str | None

    @property
    def active(self) -> bool:
        return self.status in ("存续", "在业")


@dataclass
class Couple:
    husband: str
    wife: str
    married: date
    divorced: date | None
    division: str
    married_cert: str = ""
    divorced_cert: str = ""


@dataclass
class World:
    """The generated world: entities plus one list of clean records per resource code.

    Records are dicts keyed by catalog field name in catalog order, with typed Python values
    (``str``, ``date``, ``datetime``, ``int``, ``Decimal``, ``None``). ``free_keys`` lists,
    per resource, the primary-key tuples that no other resource refers to: only their rows
    may take a defect in a register other resources point at.
    """

    seed: int
    run_date: date
    scale: float
    residents: dict[str, Resident]
    companies: dict[str, Company]
    couples: list[Couple]
    records: dict[str, list[dict]] = field(default_factory=dict)
    free_keys: dict[str, set[tuple]] = field(default_factory=dict)


# --- places -----------------------------------------------------------------------------------

class Places:
    """Division codes and names from the reference list (python-stdnum's loc.dat)."""

    def __init__(self, ref: DivisionReference):
        self.ref = ref
        self.zj_current = ref.counties(prefix="33")
        self._zj_all = ref.counties(prefix="33", current_only=False)
        self._other_all = [c for p in OTHER_PROVINCES for c in ref.counties(prefix=p, current_only=False)]

    @cache  # noqa: B019 - one Places per build, a few hundred distinct years
    def valid_in(self, year: int, home: bool) -> tuple[str, ...]:
        """County codes (Zhejiang when ``home``) that were valid in ``year``."""
        pool = self._zj_all if home else self._other_all
        codes = tuple(c for c in pool if self.ref.is_known(c, policy="at_year", year=year))
        return codes or tuple(pool)

    def county(self, code: str) -> str:
        return self.ref.name(code) or ""

    def city(self, code: str) -> str:
        return self.ref.name(code[:4] + "00") or ""

    def province(self, code: str) -> str:
        return self.ref.name(code[:2] + "0000") or ""

    def prefix(self, code: str) -> str:
        """'浙江省杭州市西湖区' for a county code."""
        return f"{self.province(code)}{self.city(code)}{self.county(code)}"


# --- the generator ---------------------------------------------------------------------------

class _Generator:
    def __init__(self, seed: int, run_date: date, scale: float):
        self.seed = seed
        self.run_date = run_date
        self.scale = scale
        self.places = Places(load_divisions())
        self.residents: dict[str, Resident] = {}
        self.companies: dict[str, Company] = {}
        self.couples: list[Couple] = []
        self._rid_bodies: set[str] = set()
        self._used: dict[str, set] = defaultdict(set)
        self.yesterday = run_date - timedelta(days=1)

    def rng(self, stage: str) -> random.Random:
        """An independent stream per stage (string seeds hash with SHA-512: stable across runs)."""
        return random.Random(f"{self.seed}:{stage}")

    def n(self, base: int) -> int:
        return max(1, round(base * self.scale))

    def unique(self, kind: str, make) -> str:
        """Draw values from ``make()`` until one is new for ``kind``."""
        for _ in range(10_000):
            v = make()
            if v not in self._used[kind]:
                self._used[kind].add(v)
                return v
        raise RuntimeError(f"could not draw a unique {kind}")

    def serial(self, kind: str, rng: random.Random, prefix: str, digits: int) -> str:
        """``prefix`` + ``digits`` random digits, unique for ``kind``."""
        return self.unique(kind, lambda: f"{prefix}{rng.randrange(10**digits):0{digits}d}")

    # -- people --------------------------------------------------------------------------

    def name(self, rng: random.Random, gender: str, birth_year: int, surname: str | None = None,
             rare: bool = False) -> str:
        if surname is None:
            if rng.random() < 0.01:
                surname = rng.choice(COMPOUND_SURNAMES)
            else:
                # Rank-weighted: the top surnames are far more common.
                surname = SURNAMES[min(int(rng.expovariate(1 / 18)), len(SURNAMES) - 1)]
        if birth_year < 1965:
            pool = MALE_OLD if gender == "男" else FEMALE_OLD
        elif birth_year < 2000:
            pool = MALE_MID if gender == "男" else FEMALE_MID
        else:
            pool = MALE_YOUNG if gender == "男" else FEMALE_YOUNG
        given = rng.choice(pool)
        if rng.random() < 0.8:
            given += rng.choice(pool)
        if rare:
            given = given[:1] + rng.choice(GB18030_ONLY)
        return surname + given

    def resident_id(self, rng: random.Random, birthplace: str, birth: date, gender: str) -> str:
        def body() -> str:
            seq = rng.randrange(0, 1000)
            if (seq % 2 == 1) != (gender == "男"):  # odd sequence = male (GB 11643)
                seq = (seq + 1) % 1000
            return f"{birthplace}{birth:%Y%m%d}{seq:03d}"

        b = self.unique("rid", body)
        return make_resident_id(b[:6], birth, int(b[14:17]))

    def birthplace(self, rng: random.Random, year: int, home_share: float = 0.88) -> str:
        return rng.choice(self.places.valid_in(year, rng.random() < home_share))

    def mobile(self, rng: random.Random) -> str:
        return self.unique("phone", lambda: rng.choice(MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}")

    def landline(self, rng: random.Random, division: str) -> str:
        area = AREA_CODES.get(division[:4], "0571")
        return self.unique("phone", lambda: f"{area}-8{rng.randrange(10**7):07d}")

    def address(self, rng: random.Random, division: str) -> str:
        base = self.places.prefix(division)
        r = rng.random()
        if r < 0.45:
            return (f"{base}{rng.choice(ESTATES)}{rng.choice(ESTATE_KIND)}{rng.randint(1, 30)}幢"
                    f"{rng.randint(1, 4)}单元{rng.randint(1, 28)}{rng.randint(1, 4):02d}室")
        if r < 0.8:
            return f"{base}{rng.choice(ROADS)}{rng.randint(1, 999)}号"
        return f"{base}{rng.choice(TOWNS)}镇{rng.choice(VILLAGES)}村{rng.randint(1, 300)}号"

    def adults(self) -> None:
        rng = self.rng("adults")
        years = list(range(1940, 2001))
        weights = [0.5 if y < 1950 else 1.0 if y < 1960 else 1.5 if y < 1970 else 1.3 if y < 1980
                   else 1.4 if y < 1990 else 1.2 for y in years]
        eth_names, eth_w = zip(*ETHNICITIES, strict=True)
        for _ in range(self.n(round(N_RESIDENTS * ADULT_SHARE))):
            year = rng.choices(years, weights)[0]
            birth = rand_date(rng, date(year, 1, 1), date(year, 12, 31))
            gender = rng.choice(["男", "女"])
            bp = self.birthplace(rng, year)
            rid = self.resident_id(rng, bp, birth, gender)
            division = rng.choice(self.places.zj_current)
            phone = (self.landline(rng, division) if year < 1960 and rng.random() < 0.3
                     else self.mobile(rng) if rng.random() < 0.97 else None)
            self.residents[rid] = Resident(
                rid=rid, name=self.name(rng, gender, year), gender=gender, birth=birth,
                ethnicity=rng.choices(eth_names, eth_w)[0], birthplace=bp, division=division,
                address=self.address(rng, division), phone=phone)
        # Isolated residents: moved out, deceased or simply unlinked; they appear nowhere else.
        adults = list(self.residents.values())
        for r in rng.sample(adults, round(len(adults) * ISOLATED_SHARE)):
            r.isolated = True
            r.status = rng.choices(["正常", "迁出", "死亡"], [6, 3, 1])[0]

    def pair(self) -> None:
        """Marry resident men and women of marrying age; some later divorce."""
        rng = self.rng("couples")
        men = sorted((r for r in self.residents.values() if r.gender == "男" and not r.isolated),
                     key=lambda r: r.rid)
        women = [r for r in self.residents.values() if r.gender == "女" and not r.isolated]
        by_year: dict[int, list[Resident]] = defaultdict(list)
        for w in women:
            by_year[w.birth.year].append(w)
        rng.shuffle(men)
        for m in men:
            if m.birth.year > 1998 or rng.random() > 0.8:
                continue
            cands = [w for dy in range(-2, 8) for w in by_year.get(m.birth.year + dy, ()) if not w.married]
            if not cands:
                continue
            w = rng.choice(sorted(cands, key=lambda r: r.rid))
            # Legal ages (婚姻法): men 22, women 20; not before the 1950 Marriage Law.
            earliest = max(add_years(m.birth, 22), add_years(w.birth, 20), date(1950, 5, 1))
            wed = rand_date(rng, earliest, min(add_years(earliest, 10), self.yesterday))
            if wed > self.yesterday:
                continue
            divorced = None
            if rng.random() < 0.08:
                d = rand_date(rng, add_years(wed, 1), add_years(wed, 15))
                divorced = d if d <= self.yesterday else None
            m.married = w.married = True
            m.spouse, w.spouse = w.rid, m.rid
            self.couples.append(Couple(m.rid, w.rid, wed, divorced, m.division))
        for c in self.couples:
            if c.divorced:
                for rid in (c.husband, c.wife):
                    self.residents[rid].married = False
                    self.residents[rid].spouse = None

    def children(self) -> None:
        """Children born 2001-2024 to resident couples (mother 21-40, after the wedding)."""
        rng = self.rng("children")
        n_children = self.n(N_RESIDENTS) - len(self.residents)
        last = min(date(2024, 12, 31), self.yesterday)
        by_mother_year: dict[int, list[Couple]] = defaultdict(list)
        for c in self.couples:
            by_mother_year[self.residents[c.wife].birth.year].append(c)
        eth_names, eth_w = zip(*ETHNICITIES, strict=True)
        made, rare_left, attempts = 0, 2, 0
        while made < n_children and attempts < 50 * max(n_children, 1):
            attempts += 1
            year = rng.randint(2001, last.year)
            cands = [c for age in range(21, 41) for c in by_mother_year.get(year - age, ())]
            rng.shuffle(cands)
            for c in cands:
                lo = max(date(year, 1, 1), c.married + timedelta(days=300))
                hi = min(date(year, 12, 31), last, (c.divorced or last) - timedelta(days=30))
                if lo <= hi:
                    break
            else:
                continue
            birth = rand_date(rng, lo, hi)
            father, mother = self.residents[c.husband], self.residents[c.wife]
            gender = rng.choice(["男", "女"])
            surname = father.name[:2] if father.name[:2] in COMPOUND_SURNAMES else father.name[0]
            rare = birth.year >= 2015 and rare_left > 0 and rng.random() < 0.1
            rare_left -= rare
            # Born where the family lives when that code existed then; otherwise any code of the year.
            valid = self.places.valid_in(birth.year, True)
            bp = father.division if father.division in valid else rng.choice(valid)
            rid = self.resident_id(rng, bp, birth, gender)
            self.residents[rid] = Resident(
                rid=rid, name=self.name(rng, gender, birth.year, surname, rare), gender=gender,
                birth=birth, ethnicity=father.ethnicity if rng.random() < 0.9 else rng.choices(eth_names, eth_w)[0],
                birthplace=bp, division=father.division, address=father.address,
                phone=self.mobile(rng) if age_on(birth, self.run_date) >= 14 else None,
                father=father.rid, mother=mother.rid)
            made += 1

    def households(self) -> None:
        """户号 and 与户主关系: a couple shares the husband's household with its children;
        after a divorce the wife heads a new household."""
        rng = self.rng("households")
        hh = lambda: f"{rng.randrange(10**8, 10**9)}"  # noqa: E731
        wives = {c.wife: c for c in self.couples}
        ordered = sorted(self.residents.values(), key=lambda r: r.rid)
        for r in ordered:  # every first-generation adult heads a household unless a wife
            if r.father is None and not (r.rid in wives and wives[r.rid].divorced is None):
                r.household_no, r.relation = self.unique("hh", hh), "户主"
                if r.rid in wives:  # divorced: she moved to a new address in her county
                    r.address = self.address(rng, r.division)
        for c in self.couples:
            if c.divorced is None:
                h, w = self.residents[c.husband], self.residents[c.wife]
                w.household_no, w.relation, w.division, w.address = h.household_no, "配偶", h.division, h.address
        for r in ordered:
            if r.father:
                f = self.residents[r.father]
                r.household_no, r.relation = f.household_no, "子" if r.gender == "男" else "女"
                r.division, r.address = f.division, f.address

    # -- companies --------------------------------------------------------------------------

    def make_companies(self) -> None:
        rng = self.rng("companies")
        reps = sorted((r for r in self.residents.values() if not r.isolated and r.father is None),
                      key=lambda r: r.rid)
        types, prefixes, weights = zip(*ENTITY_TYPES, strict=True)
        for _ in range(self.n(N_COMPANIES)):
            i = rng.choices(range(len(types)), weights)[0]
            etype, prefix = types[i], prefixes[i]
            division = rng.choice(self.places.zj_current)
            # A legal rep aged 22-65 on the founding day; founding between 1993 and last month.
            for _ in range(100):
                rep = rng.choice(reps)
                lo = max(date(1993, 1, 1), add_years(rep.birth, 22))
                hi = min(self.run_date - timedelta(days=30), add_years(rep.birth, 65))
                if lo <= hi:
                    break
            est = rand_date(rng, lo, hi)
            city = self.places.city(division).removesuffix("市")
            county = self.places.county(division)
            industry = rng.choice(list(INDUSTRIES))

            name = self.unique("company", partial(self._company_name, rng, etype, city, county, industry))
            uscc = self.unique("uscc", partial(self._uscc, rng, prefix, division, est))
            authority = (f"{self.places.city(division)}市场监督管理局" if county.endswith("区")
                         else f"{county}市场监督管理局")
            status = rng.choices(["存续", "在业", "吊销", "注销", "迁出"], [70, 20, 3, 6, 1])[0]
            capital = None if etype == "个体工商户" else Decimal(rng.choice([10, 30, 50, 100, 200, 500, 1000, 3000]))
            self.companies[uscc] = Company(
                uscc=uscc, name=name, legal_rep=rep.rid, division=division,
                address=self.address(rng, division), entity_type=etype, established=est,
                capital=capital.quantize(Decimal("0.01")) if capital is not None else None,
                scope=INDUSTRIES[industry] if etype != "个体工商户" else "日用百货零售；食品销售",
                authority=authority, status=status,
                phone=self.landline(rng, division) if rng.random() < 0.5 else rep.phone)

    @staticmethod
    def _company_name(rng: random.Random, etype: str, city: str, county: str, industry: str) -> str:
        brand = rng.choice(BRANDS)
        if etype == "个体工商户":
            return f"{county}{brand}{rng.choice(SHOPS)}"
        if etype == "农民专业合作社":
            return f"{county}{brand}{rng.choice(['水果', '茶叶', '蔬菜', '竹笋'])}专业合作社"
        if etype == "个人独资企业":
            return f"{city}{brand}{industry}经营部"
        if etype == "普通合伙企业":
            return f"{city}{brand}{industry}合伙企业（普通合伙）"
        if etype.startswith("股份"):
            return f"浙江{brand}{industry}股份有限公司"
        return f"{city}{brand}{industry}有限公司"

    @staticmethod
    def _uscc(rng: random.Random, prefix: str, division: str, established: date) -> str:
        # Organisation codes: 8 digits before the 2015 reform, 'MA' + 6 characters after it.
        if established >= date(2015, 10, 1):
            body = "MA" + "".join(rng.choice(USCC_CHARS) for _ in range(6))
        else:
            body = f"{rng.randrange(10**7, 10**8)}"
        return make_uscc(prefix, division, body)

    # -- education, work, health -------------------------------------------------------------

    def pick_nurses(self) -> list[Resident]:
        rng = self.rng("nurse-pick")
        pool = sorted((r for r in self.residents.values() if not r.isolated and 1966 <= r.birth.year <= 2002
                       and (r.gender == "女" or rng.random() < 0.05)), key=lambda r: r.rid)
        return rng.sample(pool, min(self.n(N_NURSES), len(pool)))

    def degrees(self, nurses: list[Resident]) -> list[dict]:
        rng = self.rng("degrees")
        nurse_ids = {r.rid for r in nurses}
        out: list[dict] = []

        def add(r: Resident, level: str, school: tuple[str, str], major: str, grad_year: int, years: int) -> date:
            grad = rand_date(rng, date(grad_year, 6, 20), date(grad_year, 7, 10))
            enrol = rand_date(rng, date(grad_year - years, 9, 1), date(grad_year - years, 9, 10))
            conclusion = "毕业" if rng.random() < 0.98 else "结业"
            cert = self.serial("degree", rng, f"{school[1]}1{LEVEL_DIGIT[level]}{grad_year}", 6)
            out.append({"cert_no": cert, "resident_id": r.rid, "name": r.name, "gender": r.gender,
                        "school": school[0], "major": major, "level": level,
                        "degree": DEGREE_OF[level] if conclusion == "毕业" else None,
                        "enrol_date": enrol, "graduation_date": grad, "conclusion": conclusion,
                        "_event": grad})
            return grad

        for r in sorted(self.residents.values(), key=lambda r: r.rid):
            if r.isolated or r.birth.year > 2003:
                continue
            y = r.birth.year
            if r.rid in nurse_ids:
                if rng.random() < 0.5:
                    grad = add(r, "本科", rng.choice(MEDICAL_UNIV), "护理学", y + 22, 4)
                else:
                    grad = add(r, "专科", rng.choice(MEDICAL_COLLEGES), "护理", y + 21, 3)
                r.career_start = grad
                continue
            p = 0.08 if y < 1965 else 0.15 if y < 1975 else 0.3 if y < 1985 else 0.45 if y < 1995 else 0.55
            if rng.random() >= p or y + 21 > self.run_date.year - 1:
                r.career_start = add_years(r.birth, 18) + timedelta(days=rng.randint(0, 700))
                continue
            level = rng.choices(["专科", "本科", "硕士研究生", "博士研究生"], [35, 50, 12, 3])[0]
            if level == "专科":
                grad = add(r, "专科", rng.choice(COLLEGES), rng.choice(COLLEGE_MAJORS), y + 21, 3)
            else:
                major = rng.choice(MAJORS)
                grad = add(r, "本科", rng.choice(UNIVERSITIES), major, y + 22, 4)
                if level != "本科" and y + 25 < self.run_date.year:
                    grad = add(r, "硕士研究生", rng.choice(UNIVERSITIES), major, y + 25, 3)
                if level == "博士研究生" and y + 28 < self.run_date.year:
                    grad = add(r, "博士研究生", rng.choice(UNIVERSITIES), major, y + 28, 3)
            r.career_start = grad
        return out

    def nurse_records(self, nurses: list[Resident]) -> list[dict]:
        rng = self.rng("nurses")
        out = []
        for r in sorted(nurses, key=lambda r: r.rid):
            start = r.career_start or add_years(r.birth, 21)
            first = rand_date(rng, max(start + timedelta(days=30), date(1994, 1, 1)),
                              min(start + timedelta(days=400), self.yesterday))
            if first > self.yesterday:
                continue
            valid = add_years(first, 5)
            while valid <= self.run_date:  # renewed every 5 years (延续注册)
                valid = add_years(valid, 5)
            division = r.division if rng.random() < 0.8 else rng.choice(self.places.zj_current)
            county, city = self.places.county(division), self.places.city(division)
            institution = rng.choice([f"{county}人民医院", f"{county}中医院", f"{city}第一人民医院",
                                      f"{county}妇幼保健院", f"{county}{rng.choice(TOWNS)}镇卫生院"])
            r.hospital = (institution, division)
            r.job_start = first
            cert = self.serial("nurse", rng, f"{first.year}33", 6)
            out.append({"cert_no": cert, "resident_id": r.rid, "name": r.name, "gender": r.gender,
                        "institution": institution, "practice_division": division,
                        "first_reg_date": first, "valid_until": valid,
                        "status": "有效" if rng.random() < 0.95 else "注销", "updated_at": None,
                        "_event": first})
        return out

    def jobs(self) -> tuple[list[dict], list[dict], list[dict], list[dict]]:
        """Employment registrations, social insurance, provident-fund accounts and loans."""
        rng = self.rng("jobs")
        active = sorted((c for c in self.companies.values() if c.active), key=lambda c: c.uscc)
        # Employment registrations end before the export stopped (the stale resource).
        emp_cut = self.run_date - timedelta(days=STALE_DAYS["RK-RS-0002"] + 20)
        employment, insurance, accounts, loans = [], [], [], []
        for r in sorted(self.residents.values(), key=lambda r: r.rid):
            if r.isolated or r.status != "正常":
                continue
            age = age_on(r.birth, self.run_date)
            in_school = r.father is not None and age <= 18
            if age < 18 or in_school:
                continue
            start = max(r.career_start or add_years(r.birth, 18), date(1995, 1, 1))
            if r.hospital:  # nurses work for public hospitals (事业单位), not for companies
                employer_name, employer_uscc, division = r.hospital[0], None, r.hospital[1]
                job_start = r.job_start
                kinds = ["机关事业单位基本养老保险", "失业保险"]
            elif age <= 60 and start <= emp_cut and rng.random() < 0.62 and any(
                    c.established <= emp_cut for c in active):
                company = rng.choice([c for c in active if c.established <= emp_cut])
                job_start = rand_date(rng, max(start, company.established), min(add_years(start, 8), emp_cut))
                r.employer, r.job_start = company.uscc, job_start
                employer_name, employer_uscc, division = company.name, company.uscc, company.division
                kinds = ["企业职工基本养老保险", "失业保险"] + (["工伤保险"] if rng.random() < 0.7 else [])
                employment.append({
                    "reg_no": self.serial("jy", rng, f"JY{division}{job_start.year}", 6),
                    "resident_id": r.rid, "name": r.name, "reg_type": "就业登记",
                    "employer_uscc": company.uscc, "employer_name": company.name, "reg_date": job_start,
                    "division_code": division, "updated_at": None, "_event": job_start})
            else:
                if age <= 60 and start <= emp_cut and rng.random() < 0.2:
                    d = rand_date(rng, max(start, date(2010, 1, 1)), emp_cut)
                    employment.append({
                        "reg_no": self.serial("jy", rng, f"SY{r.division}{d.year}", 6),
                        "resident_id": r.rid, "name": r.name, "reg_type": "失业登记", "employer_uscc": None,
                        "employer_name": None, "reg_date": d, "division_code": r.division, "updated_at": None,
                        "_event": d})
                if rng.random() < 0.6:
                    # 城乡居民养老保险 exists since the 2009-2011 pilots; adults from 16 may join.
                    d = rand_date(rng, max(date(2010, 1, 1), add_years(r.birth, 18)), self.yesterday)
                    insurance.append({"resident_id": r.rid, "name": r.name, "insurance_type": "城乡居民基本养老保险",
                                      "employer_uscc": None, "employer_name": None, "start_date": d,
                                      "status": "参保缴费", "contribution_base": None, "division_code": r.division,
                                      "updated_at": None, "_event": d})
                continue
            base = Decimal(rng.randrange(4000, 25000, 50)).quantize(Decimal("0.01"))
            for kind in kinds:
                insurance.append({"resident_id": r.rid, "name": r.name, "insurance_type": kind,
                                  "employer_uscc": employer_uscc, "employer_name": employer_name,
                                  "start_date": job_start,
                                  "status": rng.choices(["参保缴费", "暂停缴费"], [96, 4])[0],
                                  "contribution_base": base, "division_code": division, "updated_at": None,
                                  "_event": job_start})
            if rng.random() < 0.7:
                opened = max(job_start, date(1992, 1, 1)) + timedelta(days=rng.randint(0, 60))
                opened = min(opened, self.yesterday)
                months = max(1, (self.run_date - opened).days // 30)
                monthly = (base * Decimal("0.24")).quantize(Decimal("0.01"))
                balance = (monthly * min(months, rng.randint(6, 120))).quantize(Decimal("0.01"))
                acct = self.serial("acct", rng, AREA_CODES.get(division[:4], "0571")[1:] + "1", 8)
                accounts.append({"account_no": acct, "resident_id": r.rid, "name": r.name,
                                 "employer_uscc": employer_uscc, "employer_name": employer_name,
                                 "open_date": opened, "deposit_base": base, "monthly_deposit": monthly,
                                 "balance": balance, "status": rng.choices(["正常", "封存"], [92, 8])[0],
                                 "updated_at": None, "_event": opened})
                if 25 <= age <= 55 and opened + timedelta(days=180) <= self.yesterday and rng.random() < 0.28:
                    loans.append(self.loan(rng, r, opened))
        return employment, insurance, accounts, loans

    def loan(self, rng: random.Random, r: Resident, opened: date) -> dict:
        loan_date = rand_date(rng, opened + timedelta(days=180), self.yesterday)
        term = rng.choice([120, 180, 240, 300, 360])
        amount = Decimal(rng.randrange(200_000, 1_200_001, 10_000)).quantize(Decimal("0.01"))
        maturity = add_months(loan_date, term)
        elapsed = max(0, (self.run_date.year - loan_date.year) * 12 + self.run_date.month - loan_date.month)
        if maturity <= self.run_date:
            status, outstanding = "结清", Decimal("0.00")
        else:
            status = rng.choices(["正常还款", "逾期"], [95, 5])[0]
            outstanding = (amount * Decimal(term - elapsed) / Decimal(term)).quantize(Decimal("0.01"))
        spouse = self.residents[r.spouse] if r.married and r.spouse else None
        return {"contract_no": self.unique("loan", lambda: f"GJJ{loan_date.year}{rng.randrange(10**7):07d}"),
                "resident_id": r.rid, "name": r.name,
                "spouse_id": spouse.rid if spouse else None, "spouse_name": spouse.name if spouse else None,
                "loan_amount": amount, "term_months": term,
                "annual_rate": Decimal(rng.choice(["2.85", "3.10", "3.25", "3.575"])),
                "loan_date": loan_date, "maturity_date": maturity, "outstanding": outstanding,
                "status": status, "property_address": self.address(rng, rng.choice(self.places.zj_current)),
                "updated_at": None, "_event": loan_date}

    def students(self) -> list[dict]:
        rng = self.rng("students")
        school_year = self.run_date.year if self.run_date.month >= 9 else self.run_date.year - 1
        out = []
        for r in sorted(self.residents.values(), key=lambda r: r.rid):
            if r.father is None:
                continue
            # Children start school in the September after they turn six (cut-off 31 August).
            entry = r.birth.year + (6 if r.birth < date(r.birth.year, 9, 1) else 7)
            grade = school_year - entry + 1
            if not 1 <= grade <= 12:
                continue
            stage = "小学" if grade <= 6 else "初中" if grade <= 9 else "高中"
            stage_entry = entry + {"小学": 0, "初中": 6, "高中": 9}[stage]
            county = self.places.county(r.division)
            kind = {"小学": "小学", "初中": "初级中学", "高中": "高级中学"}[stage]
            school = f"{self.places.city(r.division)}{county}{rng.choice(SCHOOL_PREFIX)}{kind}"
            father, mother = self.residents[r.father], self.residents[r.mother]
            enrol = rand_date(rng, date(stage_entry, 8, 28), date(stage_entry, 9, 5))
            out.append({"student_no": "G" + r.rid, "resident_id": r.rid, "name": r.name, "gender": r.gender,
                        "birth_date": r.birth, "school": school, "stage": stage, "grade": GRADES[grade - 1],
                        "class_name": f"{rng.randint(1, 12)}班", "enrol_date": enrol,
                        "status": rng.choices(["在读", "休学", "转出"], [95, 2, 3])[0],
                        "division_code": r.division,
                        "guardian_phone": mother.phone or father.phone, "updated_at": None,
                        "_event": enrol})
        return out

    def births(self) -> list[dict]:
        rng = self.rng("births")
        out = []
        for r in sorted(self.residents.values(), key=lambda r: r.rid):
            if r.father is None or r.birth < date(2015, 1, 1):
                continue
            father, mother = self.residents[r.father], self.residents[r.mother]
            county, city = self.places.county(r.birthplace), self.places.city(r.birthplace)
            hospital = rng.choice([f"{county}妇幼保健院", f"{county}人民医院", f"{city}妇产科医院"])
            issue = min(r.birth + timedelta(days=rng.randint(1, 20)), self.yesterday)
            letter = "NOPQRSTUVW"[min(r.birth.year - 2015, 9)]
            out.append({"cert_no": self.serial("birth", rng, f"{letter}33", 7),
                        "child_name": r.name, "gender": r.gender, "birth_date": r.birth,
                        "birth_place": self.places.prefix(r.birthplace), "hospital": hospital,
                        "weight_g": rng.randint(2500, 4200), "mother_name": mother.name,
                        "mother_id": mother.rid, "father_name": father.name, "father_id": father.rid,
                        "issue_date": issue, "updated_at": None, "_event": issue})
        return out

    def credit_records(self) -> list[dict]:
        """The public credit platform's records of companies (双公示 and the red / black lists):
        licences by business scope, everyday penalties, 纳税信用 A (red list) for some active
        companies; a revoked company (吊销) carries the revocation penalty and is on the
        serious-dishonesty list (black list) for three years. Names and representatives are the
        registry's; deregistered and moved-out companies have none."""
        rng = self.rng("credit")
        out = []

        def number(abbr: str, on: date) -> str:
            return self.unique("credit_no", lambda: f"{abbr}〔{on.year}〕{rng.randint(1, 9999)}号")

        def record(c: Company, kind: str, no: str, content: str, authority: str, division: str, on: date,
                   until: date | None) -> dict:
            rep = self.residents[c.legal_rep]
            return {"decision_no": no, "uscc": c.uscc, "entity_name": c.name, "legal_rep_name": rep.name,
                    "record_type": kind, "content": content, "authority": authority,
                    "authority_division": division, "decision_date": on, "valid_until": until,
                    "updated_at": None, "_event": on}

        for c in sorted(self.companies.values(), key=lambda c: c.uscc):
            city_code, city = c.division[:4] + "00", self.places.city(c.division)
            if c.status == "吊销":
                on = rand_date(rng, min(add_years(c.established, 1), self.yesterday), self.yesterday)
                out.append(record(c, "行政处罚", number(c.authority[:2] + "市监处罚", on),
                                  "违反《市场主体登记管理条例》，吊销营业执照", c.authority, c.division, on,
                                  add_years(on, 3)))
                listed = min(on + timedelta(days=rng.randint(30, 120)), self.yesterday)
                out.append(record(c, "黑名单", number(c.authority[:2] + "市监信用", listed),
                                  "被吊销营业执照，列入严重违法失信名单", c.authority, c.division,
                                  listed, add_years(listed, 3)))
                continue
            if not c.active:
                continue
            for keyword, licence, dept, abbr, years in CREDIT_LICENCES:
                if keyword in c.scope and rng.random() < 0.6:  # the current licence (renewed on expiry)
                    on = rand_date(rng, max(c.established, add_years(self.run_date, -years)), self.yesterday)
                    out.append(record(c, "行政许可", number(city[:1] + abbr, on), f"准予{licence}",
                                      f"{city}{dept}", city_code, on, add_years(on, years)))
                    break
            if rng.random() < 0.1:
                dept, abbr, cause, result = rng.choice(CREDIT_PENALTIES)
                on = rand_date(rng, max(c.established, add_years(self.run_date, -4)), self.yesterday)
                out.append(record(c, "行政处罚", number(city[:1] + abbr, on), f"{cause}：{result}",
                                  f"{city}{dept}", city_code, on, add_years(on, 1)))
            if rng.random() < 0.06:
                on = date(rng.choice([self.run_date.year - 2, self.run_date.year - 1]), 4, rng.randint(1, 28))
                if on > c.established:
                    out.append(record(c, "红名单", number("浙税信", on), "纳税信用A级纳税人",
                                      "国家税务总局浙江省税务局", "330000", on, date(on.year + 1, 12, 31)))
            elif rng.random() < 0.01:
                on = rand_date(rng, max(c.established, add_years(self.run_date, -2)), self.yesterday)
                out.append(record(c, "黑名单", number(city[:1] + "人社信用", on), "拖欠农民工工资，列入失信联合惩戒对象名单",
                                  f"{city}人力资源和社会保障局", city_code, on, add_years(on, 3)))
        return out

    def identity_cards(self) -> list[dict]:
        """Cards per the Resident ID Card Law: valid 5 years under 16, 10 years to 25,
        20 years to 45, long-term (no end date) from 46."""
        rng = self.rng("cards")
        out = []
        for r in sorted(self.residents.values(), key=lambda r: r.rid):
            age = age_on(r.birth, self.run_date)
            if r.isolated or age < 6 or (age < 16 and rng.random() > 0.3):
                continue
            first_age = 16 if age >= 16 else rng.randint(6, age)
            issue = max(add_years(r.birth, first_age), date(1985, 1, 1)) + timedelta(days=rng.randint(0, 300))
            while True:
                a = age_on(r.birth, issue)
                years = 5 if a < 16 else 10 if a < 26 else 20 if a < 46 else None
                end = add_years(issue, years) if years else None
                if end is None or end > self.run_date:
                    break
                issue = end - timedelta(days=rng.randint(0, 60))  # renewed shortly before expiry
            issue = min(issue, self.yesterday)
            county, city = self.places.county(r.division), self.places.city(r.division)
            authority = f"{city}公安局{county}分局" if county.endswith("区") else f"{county}公安局"
            out.append({"resident_id": r.rid, "name": r.name, "gender": r.gender, "ethnicity": r.ethnicity,
                        "birth_date": r.birth, "address": r.address, "issuing_authority": authority,
                        "valid_from": issue, "valid_to": end, "updated_at": None, "_event": issue})
        return out

    def marriages(self) -> list[dict]:
        rng = self.rng("marriages")
        out = []
        for c in self.couples:
            for kind, day in (("结婚", c.married), ("离婚", c.divorced)):
                if day is None:
                    continue
                valid = self.places.valid_in(day.year, True)
                code = c.division if c.division in valid else rng.choice(valid)
                prefix = "J" if kind == "结婚" else "L"
                cert = self.serial("marriage", rng, f"{prefix}{code}-{day.year}-", 6)
                h, w = self.residents[c.husband], self.residents[c.wife]
                out.append({"cert_no": cert, "reg_type": kind, "male_id": h.rid, "male_name": h.name,
                            "female_id": w.rid, "female_name": w.name, "reg_date": day, "reg_division": code,
                            "reg_office": f"{self.places.county(code)}民政局婚姻登记处", "updated_at": None,
                            "_event": day})
        return out

    def registers(self) -> tuple[list[dict], list[dict], list[dict]]:
        """Household register, business register and business licences."""
        rng = self.rng("registers")
        household = [{"resident_id": r.rid, "name": r.name, "gender": r.gender, "birth_date": r.birth,
                      "ethnicity": r.ethnicity, "household_no": r.household_no, "relation": r.relation,
                      "division_code": r.division, "address": r.address, "phone": r.phone,
                      "reg_status": r.status, "updated_at": None, "_event": r.birth}
                     for r in sorted(self.residents.values(), key=lambda r: r.rid)]
        business, licences = [], []
        for c in sorted(self.companies.values(), key=lambda c: c.uscc):
            rep = self.residents[c.legal_rep]
            business.append({"uscc": c.uscc, "name": c.name, "legal_rep_name": rep.name, "legal_rep_id": rep.rid,
                             "division_code": c.division, "address": c.address, "entity_type": c.entity_type,
                             "established_date": c.established, "registered_capital": c.capital,
                             "business_scope": c.scope, "reg_authority": c.authority, "status": c.status,
                             "phone": c.phone, "updated_at": None, "_event": c.established})
            if not c.active:  # revoked / cancelled / moved-out entities hold no valid licence
                continue
            issue = rand_date(rng, c.established, min(add_years(c.established, 12), self.yesterday))
            until = add_years(c.established, 30)
            licences.append({
                "licence_no": self.serial("licence", rng, f"{c.division}{issue.year}", 6),
                "uscc": c.uscc, "name": c.name, "legal_rep_name": rep.name, "address": c.address,
                "issue_date": issue, "valid_from": c.established,
                "valid_until": until if until > self.run_date and rng.random() < 0.4 else None,
                "issuing_authority": c.authority, "updated_at": None, "_event": issue})
        return household, business, licences

    # -- assembly ---------------------------------------------------------------------------

    def stamp(self, code: str, rows: list[dict], *, stale_days: int = 0) -> None:
        """Fill ``updated_at``: after the record's own event, before the run date's morning;
        about 2% changed during the run date itself (what an incremental run picks up).
        ``stale_days``: the source stopped that many days before the run date."""
        rng = self.rng(f"stamp:{code}")
        ceiling = datetime.combine(self.run_date - timedelta(days=stale_days), time(6, 0))
        day_start = ceiling - timedelta(hours=6)
        for row in rows:
            floor = datetime.combine(max(row.pop("_event"), date(2012, 1, 1)), time(8, 0))
            floor = min(floor, day_start - timedelta(days=1))
            lo, hi = (day_start, ceiling) if rng.random() < 0.02 else (floor, day_start)
            seconds = int((hi - lo).total_seconds())
            row["updated_at"] = lo + timedelta(seconds=rng.randint(0, max(seconds - 1, 0)))
        if rows:  # the newest change lands early on the run date (or the day the source stopped)
            rows[rng.randrange(len(rows))]["updated_at"] = ceiling - timedelta(minutes=rng.randint(1, 300))

    def run(self) -> World:
        self.adults()
        self.pair()
        self.children()
        self.households()
        self.make_companies()
        nurses = self.pick_nurses()
        degree_rows = self.degrees(nurses)
        nurse_rows = self.nurse_records(nurses)
        employment, insurance, accounts, loans = self.jobs()
        household, business, licences = self.registers()
        records = {
            "RK-GA-0001": household,
            "RK-GA-0002": self.identity_cards(),
            "RK-MZ-0001": self.marriages(),
            "RK-RS-0001": insurance,
            "RK-RS-0002": employment,
            "RK-JY-0001": degree_rows,
            "RK-JY-0002": self.students(),
            "FR-SC-0001": business,
            "FR-SC-0002": licences,
            "RK-GJJ-0001": accounts,
            "RK-GJJ-0002": loans,
            "RK-WJ-0001": self.births(),
            "RK-WJ-0002": nurse_rows,
            "FR-SW-0001": [],  # planned: the tax bureau delivers nothing yet
            "FR-FG-0001": self.credit_records(),
        }
        for code, rows in records.items():
            self.stamp(code, rows, stale_days=STALE_DAYS.get(code, 0))
        # Keys that no other resource points at: safe targets for key-damaging defects.
        free = {
            "RK-GA-0001": {(r.rid,) for r in self.residents.values() if r.isolated},
            "FR-SC-0001": {(c.uscc,) for c in self.companies.values() if not c.active}
            - {(r["uscc"],) for r in records["FR-FG-0001"]},
        }
        return World(seed=self.seed, run_date=self.run_date, scale=self.scale, residents=self.residents,
                     companies=self.companies, couples=self.couples, records=records, free_keys=free)


def build_world(seed: int = DEFAULT_SEED, run_date: date = DEFAULT_RUN_DATE, scale: float = 1.0) -> World:
    """Generate the sandbox world: the same ``seed``, ``run_date`` and ``scale`` always give
    the same residents, companies and records (in the same order)."""
    if scale <= 0:
        raise ValueError("scale must be positive")
    return _Generator(seed, run_date, scale).run()
