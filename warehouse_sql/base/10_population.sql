-- target: base.population
-- sources: household_register, marriage_registration, degree_certificate, social_insurance, provident_fund_account
-- Population base library (人口综合库): one row per resident ID from public security's
-- household register, joined with civil affairs' latest marriage registration, education's
-- latest degree, social-insurance enrolment and the housing-fund account. Each attribute
-- group names the resource that supplied it (src_*).
DROP TABLE IF EXISTS base.population;

CREATE TABLE base.population AS
WITH marriage AS (
    SELECT person_id, reg_type, reg_date,
           ROW_NUMBER() OVER (PARTITION BY person_id ORDER BY reg_date DESC, cert_no DESC) AS rn
    FROM (
        SELECT male_id AS person_id, reg_type, reg_date, cert_no FROM ods.marriage_registration
        UNION ALL
        SELECT female_id AS person_id, reg_type, reg_date, cert_no FROM ods.marriage_registration
    ) both_partners
),
degree AS (
    SELECT resident_id, degree, level, school, graduation_date,
           ROW_NUMBER() OVER (PARTITION BY resident_id ORDER BY graduation_date DESC, cert_no DESC) AS rn
    FROM ods.degree_certificate
),
insurance AS (
    SELECT resident_id, COUNT(*) AS insurance_types
    FROM ods.social_insurance
    GROUP BY resident_id
),
fund AS (
    SELECT resident_id, account_no, status,
           ROW_NUMBER() OVER (PARTITION BY resident_id ORDER BY open_date DESC, account_no DESC) AS rn
    FROM ods.provident_fund_account
)
SELECT
    h.resident_id,
    h.name,
    h.gender,
    h.birth_date,
    h.ethnicity,
    h.division_code,
    h.address,
    'RK-GA-0001' AS src_identity,
    CASE m.reg_type WHEN '结婚' THEN '已婚' WHEN '离婚' THEN '离婚' ELSE '未登记' END AS marital_status,
    m.reg_date AS marital_status_since,
    CASE WHEN m.person_id IS NULL THEN NULL ELSE 'RK-MZ-0001' END AS src_marital_status,
    d.degree AS highest_degree,
    d.level AS highest_degree_level,
    d.school AS highest_degree_school,
    CASE WHEN d.resident_id IS NULL THEN NULL ELSE 'RK-JY-0001' END AS src_degree,
    COALESCE(i.insurance_types, 0) AS insurance_types,
    CASE WHEN i.resident_id IS NULL THEN NULL ELSE 'RK-RS-0001' END AS src_insurance,
    f.account_no AS hpf_account_no,
    f.status AS hpf_account_status,
    CASE WHEN f.resident_id IS NULL THEN NULL ELSE 'RK-GJJ-0001' END AS src_hpf
FROM ods.household_register h
LEFT JOIN marriage m ON m.person_id = h.resident_id AND m.rn = 1
LEFT JOIN degree d ON d.resident_id = h.resident_id AND d.rn = 1
LEFT JOIN insurance i ON i.resident_id = h.resident_id
LEFT JOIN fund f ON f.resident_id = h.resident_id AND f.rn = 1;
