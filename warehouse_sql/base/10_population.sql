-- target: base.population
-- key: resident_id
-- sources: household_register(resident_id), identity_card(resident_id), marriage_registration(male_id, female_id), degree_certificate(resident_id), social_insurance(resident_id), provident_fund_account(resident_id)
-- plan: merge
-- Population base library (人口综合库): one row per resident ID registered by public security
-- (household register 户籍, or identity card 身份证 where the register row is missing or was
-- quarantined), merged with civil affairs' latest marriage registration, education's highest
-- degree, social-insurance enrolment and the housing-fund account. Identity attributes take
-- the household register's value, else the identity card's. Every attribute (group) names the
-- resource that supplied it (<attr>_src) and the start of the data interval whose delivery
-- brought that value (<attr>_src_at). Disagreements between sources: 11_population_conflicts.
WITH hr AS (
    SELECT resident_id, name, gender, birth_date, ethnicity, division_code, address, reg_status, _valid_from
    FROM {{ source('household_register') }}
    WHERE {{ in_scope('resident_id') }}
),
idc AS (
    SELECT resident_id, name, gender, birth_date, ethnicity, address, valid_to, _valid_from
    FROM {{ source('identity_card') }}
    WHERE {{ in_scope('resident_id') }}
),
person AS (
    SELECT COALESCE(hr.resident_id, idc.resident_id) AS resident_id,
           {{ pick('name', 'hr:household_register', 'idc:identity_card') }},
           {{ pick('gender', 'hr:household_register', 'idc:identity_card') }},
           {{ pick('birth_date', 'hr:household_register', 'idc:identity_card') }},
           {{ pick('ethnicity', 'hr:household_register', 'idc:identity_card') }},
           {{ pick('address', 'hr:household_register', 'idc:identity_card') }},
           hr.division_code,
           hr.reg_status,
           {{ src('hr', 'household_register', 'registration', present='hr.resident_id') }},
           idc.valid_to AS id_card_valid_to,
           {{ src('idc', 'identity_card', 'id_card', present='idc.resident_id') }}
    FROM hr FULL OUTER JOIN idc ON idc.resident_id = hr.resident_id
),
marriage AS (
    SELECT person_id, reg_type, reg_date, _valid_from,
           ROW_NUMBER() OVER (PARTITION BY person_id ORDER BY reg_date DESC, cert_no DESC) AS rn
    FROM (
        SELECT male_id AS person_id, reg_type, reg_date, cert_no, _valid_from
        FROM {{ source('marriage_registration') }}
        WHERE {{ in_scope('male_id') }}
        UNION ALL
        SELECT female_id AS person_id, reg_type, reg_date, cert_no, _valid_from
        FROM {{ source('marriage_registration') }}
        WHERE {{ in_scope('female_id') }}
    ) both_partners
),
degree AS (
    SELECT resident_id, degree, level, school, graduation_date, _valid_from,
           ROW_NUMBER() OVER (
               PARTITION BY resident_id
               ORDER BY CASE level WHEN '博士研究生' THEN 4 WHEN '硕士研究生' THEN 3 WHEN '本科' THEN 2 ELSE 1 END DESC,
                        graduation_date DESC, cert_no DESC) AS rn
    FROM {{ source('degree_certificate') }}
    WHERE {{ in_scope('resident_id') }}
),
insurance AS (
    SELECT resident_id, COUNT(*) AS insurance_types,
           SUM(CASE WHEN status = '参保缴费' THEN 1 ELSE 0 END) AS insurance_paying,
           MAX(_valid_from) AS _valid_from
    FROM {{ source('social_insurance') }}
    WHERE {{ in_scope('resident_id') }}
    GROUP BY resident_id
),
fund AS (
    SELECT resident_id, account_no, status, _valid_from,
           ROW_NUMBER() OVER (
               PARTITION BY resident_id
               ORDER BY CASE status WHEN '正常' THEN 0 WHEN '封存' THEN 1 ELSE 2 END, open_date DESC, account_no DESC
           ) AS rn
    FROM {{ source('provident_fund_account') }}
    WHERE {{ in_scope('resident_id') }}
)
SELECT
    p.*,
    CASE m.reg_type WHEN '结婚' THEN '已婚' WHEN '离婚' THEN '离婚' ELSE '未登记' END AS marital_status,
    m.reg_date AS marital_status_since,
    {{ src('m', 'marriage_registration', 'marital_status', present='m.person_id') }},
    d.degree AS highest_degree,
    d.level AS highest_degree_level,
    d.school AS highest_degree_school,
    d.graduation_date AS highest_degree_date,
    {{ src('d', 'degree_certificate', 'highest_degree', present='d.resident_id') }},
    COALESCE(i.insurance_types, 0) AS insurance_types,
    COALESCE(i.insurance_paying, 0) AS insurance_paying,
    {{ src('i', 'social_insurance', 'insurance', present='i.resident_id') }},
    f.account_no AS hpf_account_no,
    f.status AS hpf_account_status,
    {{ src('f', 'provident_fund_account', 'hpf_account', present='f.resident_id') }}
FROM person p
LEFT JOIN marriage m ON m.person_id = p.resident_id AND m.rn = 1
LEFT JOIN degree d ON d.resident_id = p.resident_id AND d.rn = 1
LEFT JOIN insurance i ON i.resident_id = p.resident_id
LEFT JOIN fund f ON f.resident_id = p.resident_id AND f.rn = 1
